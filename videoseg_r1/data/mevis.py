"""MeViS reader: motion-expression video segmentation (Ding et al., ICCV 2023), ReVOS-shaped per split.

Official layout (henghuiding/MeViS README, "File Structure")::

    ROOT/{train,valid_u,valid}/JPEGImages/<video>/<frame>.jpg
    ROOT/{train,valid_u}/mask_dict.json           {anno_id: [COCO RLE or null per frame]}
    ROOT/{train,valid_u,valid}/meta_expressions.json
        {"videos": {video: {"frames": ["00000", ...],
                            "expressions": {exp_id: {"exp", "obj_id": [..], "anno_id": [..]}}}}}

* Splits (README, "Dataset Split"): ``train`` 1,662 videos for training; ``valid_u`` 50 videos with
  ground truth, "used for offline self-evaluation (e.g., ablation study) during training";
  ``valid`` 140 videos without ground truth, scored by the organisers' online server. The README
  suggests reporting both ``valid_u`` and ``valid``. ``valid``'s meta gives frames and texts only
  (no ids).
* Annotated frames: every frame of ``train`` and ``valid_u`` ("annotations for all frames in the
  Train set and the Val^u set are provided"); a frame where a target is absent holds ``null``.
  Multi-object expressions list several ``anno_id``; the target is their union.
* Scoring: ``valid_u`` offline with the official ``tools/eval_mevis.py`` protocol (J and F over all
  frames of each expression, then averaged over expressions); ``valid`` by the server from a zip
  whose root holds the video folders, ``<video>/<exp_id>/<frame>.png`` (README,
  ``sample_submission_valid.zip``), written by ``eval/submission.py``.
* Frames are named with five digits (``00000.jpg``). The videos come from MOSE; neither MeViS nor
  MOSE publishes their frame rate, so ``FRAME_RATE`` is unset (``DEFAULT_FOLDER_FPS``; ``--fps``
  sets it).
"""

from __future__ import annotations

from pathlib import Path

from videoseg_r1.data.base import require_dir
from videoseg_r1.data.revos import RevosStyleReader


class MevisReader(RevosStyleReader):
    name = "mevis"
    default_split = "valid_u"

    def __init__(self, root, split=None, fps=None):
        split = split or self.default_split
        require_dir(Path(root) / split, f"MeViS split folder {split!r}")
        super().__init__(root, split, fps)

    def meta_path(self) -> Path:
        return self.root / self.split / "meta_expressions.json"

    def mask_dict_path(self) -> Path:
        return self.root / self.split / "mask_dict.json"

    def foreground_path(self) -> Path | None:
        return None

    def image_dir(self, video: str) -> Path:
        return self.join(self.root / self.split / "JPEGImages", video)
