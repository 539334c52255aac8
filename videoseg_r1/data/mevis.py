"""MeViS reader: motion-expression video segmentation, ReVOS-shaped per split.

Layout (as published)::

    ROOT/{train,valid_u,valid}/JPEGImages/<video>/<frame>.jpg
    ROOT/{train,valid_u}/mask_dict.json           {anno_id: [RLE or null per frame]}
    ROOT/{train,valid_u,valid}/meta_expressions.json
        {"videos": {video: {"frames": [...], "expressions": {exp_id: {"exp", "obj_id", "anno_id"}}}}}

``train`` and ``valid_u`` have ground truth (offline scoring); ``valid`` has none (its expressions
carry no ids) and is scored by the server from the submission zip (``eval/submission.py``).
"""

from __future__ import annotations

from pathlib import Path

from videoseg_r1.data.base import require_dir
from videoseg_r1.data.revos import RevosStyleReader


class MevisReader(RevosStyleReader):
    name = "mevis"
    default_split = "valid_u"

    def __init__(self, root, split=None):
        split = split or self.default_split
        require_dir(Path(root) / split, f"MeViS split folder {split!r}")
        super().__init__(root, split)

    def meta_path(self) -> Path:
        return self.root / self.split / "meta_expressions.json"

    def mask_dict_path(self) -> Path:
        return self.root / self.split / "mask_dict.json"

    def foreground_path(self) -> Path | None:
        return None

    def image_dir(self, video: str) -> Path:
        return self.root / self.split / "JPEGImages" / video
