"""VideoSeg-R1: reasoning video object segmentation trained with reinforcement learning.

Public API: ``PipelineConfig`` (and, once the pipeline lands, ``VideoSegR1Pipeline`` and
``load_pipeline``). Nothing heavy is imported here.
"""

from videoseg_r1.config import PipelineConfig

__all__ = ["PipelineConfig"]
__version__ = "0.1.0"
