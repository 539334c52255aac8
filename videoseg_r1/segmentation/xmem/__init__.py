"""Our XMem (network that loads the official checkpoints, memory, inference core).

Public contract (SPEC §5): ``XMem`` (default configuration = the official one; strict loading of the
official state dicts) and ``load_xmem(path_or_url, device="cpu")``. The propagator in
``videoseg_r1.segmentation.propagation`` drives it; nothing heavy runs at import.
"""

from videoseg_r1.segmentation.xmem.inference import (FrameFeatures, InferenceConfig, InferenceCore, XMemState,
                                                      make_geometry)
from videoseg_r1.segmentation.xmem.memory import KeyValueStore, MemoryConfig, MemoryManager
from videoseg_r1.segmentation.xmem.network import (XMem, XMemConfig, config_from_state_dict, convert_single_object,
                                                    load_xmem)

__all__ = ["XMem", "XMemConfig", "load_xmem", "convert_single_object", "config_from_state_dict", "InferenceCore",
           "InferenceConfig", "XMemState", "FrameFeatures", "MemoryManager", "MemoryConfig", "KeyValueStore",
           "make_geometry"]
