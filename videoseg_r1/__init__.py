"""VideoSeg-R1: reasoning video object segmentation trained with reinforcement learning.

Public API::

    from videoseg_r1 import load_pipeline
    pipe = load_pipeline(preset="synthetic-small", device="cpu")   # or reasoner=..., sam2=..., config=...
    result = pipe(video, "the shape that stops first")            # path, folder, (T, H, W, 3) array, frames
    result.tracks.union()                                         # (T, H, W) masks; result.trace, .prompts
    result.save("out/")                                           # what `videoseg-r1 segment` writes

Nothing heavy is imported until a name is used.
"""

from videoseg_r1.config import PipelineConfig

__all__ = ["PipelineConfig", "VideoSegR1Pipeline", "Result", "load_pipeline"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in ("VideoSegR1Pipeline", "Result", "load_pipeline"):
        from videoseg_r1 import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'videoseg_r1' has no attribute {name!r}")
