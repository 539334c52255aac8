"""Speed and memory of mask propagation: our XMem and transformers' SAM2 video, random weights.

Full-size networks (XMem = the official architecture, SAM2 = Hiera-L configuration) on a synthetic
480x854 video streamed through the same ``Video`` interface the pipeline uses, 1 and 3 objects, 300
and 1500 frames, fp32 against bf16, all in one run; prints frames/s and peak GPU memory as a table.
Propagation runs forward from frame 0 (one direction), after a short warm-up run.

    python benchmarks/bench_propagation.py                # CUDA, the full table (several minutes)
    python benchmarks/bench_propagation.py --quick        # CPU smoke test with tiny networks
    python benchmarks/bench_propagation.py --backends xmem --frames 300 --objects 1 --output out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from videoseg_r1.video import Video


class SyntheticVideo(Video):
    """A streamed synthetic video: ``pool`` pre-rendered frames (moving discs over noise) cycled, so that
    frames cost nothing to produce and nothing holds the whole video."""

    def __init__(self, num_frames: int, height: int, width: int, pool: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.path = Path(f"<synthetic {num_frames}x{height}x{width}>")
        self.fps, self.short_side = 30.0, None
        self.orig_height, self.orig_width = height, width
        self._n = num_frames
        yy, xx = np.mgrid[:height, :width]
        self._pool = []
        for t in range(pool):
            f = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
            for k in range(3):
                cy, cx = height * (0.3 + 0.2 * k), width * (0.2 + 0.25 * k) + 3 * t
                f[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(height, width) * 0.1) ** 2] = (200, 60 * k, 255 - 60 * k)
            self._pool.append(f)

    def __len__(self) -> int:
        return self._n

    def get_frames(self, indices):
        return [self._pool[self._check_index(int(i)) % len(self._pool)] for i in indices]


def key_masks(video: Video, num_objects: int) -> dict[int, np.ndarray]:
    h, w = video.height, video.width
    yy, xx = np.mgrid[:h, :w]
    out = {}
    for k in range(num_objects):
        cy, cx = h * (0.3 + 0.2 * k), w * (0.2 + 0.25 * k)
        out[k + 1] = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) * 0.1) ** 2
    return out


# ------------------------------------------------------------------------------------- builders


def build_xmem(quick: bool):
    import torch

    from videoseg_r1.segmentation.tiny import build_tiny_xmem
    from videoseg_r1.segmentation.xmem import XMem

    if quick:
        return build_tiny_xmem()
    torch.manual_seed(0)
    return XMem().eval()  # the official architecture, random weights


def build_sam2_video(quick: bool):
    from videoseg_r1.segmentation.tiny import build_tiny_sam2_video

    if quick:
        return build_tiny_sam2_video(image_size=64)
    import torch
    from transformers import (Sam2ImageProcessor, Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor,
                              Sam2VideoVideoProcessor)

    torch.manual_seed(0)
    hiera_l = dict(model_type="sam2_hiera_det_model", hidden_size=144, num_attention_heads=2,
                   blocks_per_stage=[2, 6, 36, 4], embed_dim_per_stage=[144, 288, 576, 1152],
                   num_attention_heads_per_stage=[2, 4, 8, 16], window_size_per_stage=[8, 4, 16, 8],
                   global_attention_blocks=[23, 33, 43], window_positional_embedding_background_size=[7, 7])
    config = Sam2VideoConfig(vision_config=dict(backbone_config=hiera_l, backbone_channel_list=[1152, 576, 288, 144]))
    model = Sam2VideoModel(config).eval()
    processor = Sam2VideoProcessor(image_processor=Sam2ImageProcessor(), video_processor=Sam2VideoVideoProcessor())
    return model, processor


# ------------------------------------------------------------------------------------- measuring


def run_case(make_propagator, video: Video, num_objects: int, device: str) -> dict:
    import torch

    cuda = device.startswith("cuda")
    prop = make_propagator()
    masks = key_masks(video, num_objects)
    warm = SyntheticVideo(min(20, len(video)), video.height, video.width)
    for _ in prop.propagate(warm, 0, masks):  # warm-up: kernels, cudnn autotuning, allocator
        pass
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    frames = sum(1 for _ in prop.propagate(video, 0, masks))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del prop
    if cuda:
        torch.cuda.empty_cache()
    return {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 1), "peak_gb": round(peak, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: tiny networks, small frames, few frames")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --quick)")
    ap.add_argument("--backends", nargs="+", default=["xmem", "sam2_video"], choices=["xmem", "sam2_video"])
    ap.add_argument("--frames", nargs="+", type=int, default=None, help="default 300 1500")
    ap.add_argument("--sam2-frames", nargs="+", type=int, default=None, help="SAM2 frame counts (default 300)")
    ap.add_argument("--objects", nargs="+", type=int, default=[1, 3])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--key-batch", nargs="+", type=int, default=[8], help="XMem frames key-encoded per batch")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--output", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    import torch

    from videoseg_r1.config import PropagatorConfig
    from videoseg_r1.segmentation.propagation import XMemPropagator
    from videoseg_r1.segmentation.sam2_video import Sam2VideoPropagator

    device = args.device or ("cpu" if args.quick else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available; run with --quick for the CPU smoke test", file=sys.stderr)
        return 2
    if args.quick:
        frames = args.frames or [12]
        sam2_frames = args.sam2_frames or [4]
        height, width = 48, 80
        short_side = 32
    else:
        frames = args.frames or [300, 1500]
        sam2_frames = args.sam2_frames or [300]
        height, width = args.height, args.width
        short_side = 480
    torch.backends.cudnn.benchmark = True
    rows = []
    header = f"{'backend':<12}{'objects':>8}{'frames':>8}{'precision':>10}{'key_batch':>10}{'frames/s':>10}{'peak GB':>9}"
    print(f"device: {torch.cuda.get_device_name() if device.startswith('cuda') else 'cpu'}; "
          f"video {height}x{width}; random weights")
    print(header)
    print("-" * len(header))
    for backend in args.backends:
        if backend == "xmem":
            net = build_xmem(args.quick)
        else:
            sam_model, sam_processor = build_sam2_video(args.quick)
        for precision in args.precisions:
            for num_frames in (frames if backend == "xmem" else sam2_frames):
                video = SyntheticVideo(num_frames, height, width)
                for num_objects in args.objects:
                    for key_batch in (args.key_batch if backend == "xmem" else [1]):
                        cfg = PropagatorConfig(device=device, dtype=precision, short_side=short_side)
                        if backend == "xmem":
                            def make(cfg=cfg, key_batch=key_batch):
                                return XMemPropagator(net, cfg, key_batch=key_batch, directions="forward")
                        else:
                            def make(cfg=cfg):
                                return Sam2VideoPropagator(cfg, model=sam_model, processor=sam_processor,
                                                           directions="forward")
                        result = run_case(make, video, num_objects, device)
                        row = {"backend": backend, "objects": num_objects, "precision": precision,
                               "key_batch": key_batch, **result}
                        rows.append(row)
                        print(f"{backend:<12}{num_objects:>8}{result['frames']:>8}{precision:>10}{key_batch:>10}"
                              f"{result['fps']:>10.1f}{result['peak_gb']:>9.3f}", flush=True)
        if backend == "xmem":
            del net
        else:
            del sam_model
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
