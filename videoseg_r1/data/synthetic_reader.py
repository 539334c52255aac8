"""Reader of our synthetic reasoning-VOS benchmark (written by ``data/synthetic.py``, ReVOS layout).

Layout: exactly ReVOS's (``JPEGImages/``, ``mask_dict.json``, ``mask_dict_foreground.json``,
``meta_expressions_{train,valid,test_ood}_.json``) plus ``synthetic_meta.json``::

    {"version": 1, "generator": {...},
     "videos": {video: {"split", "fps", "objects": {...}}},
     "expressions": {"<video>/<exp_id>": {"split", "tier": 1-4, "difficulty": D, "template",
                                          "key_interval": [s, e], "target_frame": t, "num_targets"}}}

Each ``Expression.extra`` gets that expression's synthetic entry (tier, difficulty, key_interval,
target_frame, ...). ``--split all`` reads every split present. Results break down by split and tier
(``eval/protocols.py``).
"""

from __future__ import annotations

from pathlib import Path

from videoseg_r1.data.base import DatasetError, DataRootError, Expression, load_json
from videoseg_r1.data.revos import RevosStyleReader

SYNTHETIC_SPLITS = ("train", "valid", "test_ood")


class SyntheticReader(RevosStyleReader):
    name = "synthetic"
    default_split = "valid"

    def __init__(self, root, split=None, fps=None):
        split = split or self.default_split
        self._splits = [s for s in SYNTHETIC_SPLITS if (Path(root) / f"meta_expressions_{s}_.json").is_file()] \
            if split == "all" else [split]
        if split == "all" and not self._splits:
            raise DataRootError(f"no synthetic meta files (meta_expressions_<split>_.json) in {root}")
        self._synth: dict | None = None
        super().__init__(root, split, fps)

    def meta_path(self) -> Path:
        s = self._splits[0] if self.split == "all" else self.split
        return self.root / f"meta_expressions_{s}_.json"

    @property
    def meta(self) -> dict:
        if self._meta is None:
            merged: dict = {}
            for s in self._splits:
                path = self.root / f"meta_expressions_{s}_.json"
                data = load_json(path, "synthetic meta file")
                if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
                    raise DatasetError(f"malformed synthetic meta file {path}: expected {{\"videos\": {{...}}}}")
                for video, v in data["videos"].items():
                    if video in merged:
                        merged[video]["expressions"].update(v.get("expressions", {}))
                    else:
                        merged[video] = dict(v)
                        merged[video]["expressions"] = dict(v.get("expressions", {}))
                        merged[video]["_split"] = s
            self._meta = merged
        return self._meta

    @property
    def synthetic_meta(self) -> dict:
        if self._synth is None:
            path = self.root / "synthetic_meta.json"
            data = load_json(path, "synthetic_meta.json") if path.is_file() else {}
            if not isinstance(data, dict):
                raise DatasetError(f"malformed {path}: expected an object")
            self._synth = data
        return self._synth

    def _expr_from_entry(self, video, exp_id, entry) -> Expression:
        e = super()._expr_from_entry(video, exp_id, entry)
        info = (self.synthetic_meta.get("expressions") or {}).get(f"{video}/{exp_id}", {})
        e.extra = dict(info)
        e.extra.setdefault("split", self.meta[video].get("_split", self.split))
        return e

    def open_video(self, video: str):
        """The frames at the generator's frame rate (``synthetic_meta.json``; frame folders carry none)."""
        v = super().open_video(video)
        fps = ((self.synthetic_meta.get("videos") or {}).get(video) or {}).get("fps")
        if fps and self._fps is None:
            v.fps = float(fps)
        return v
