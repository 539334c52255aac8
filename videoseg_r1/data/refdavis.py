"""Ref-DAVIS17 reader, in the converted YouTube-VOS layout (ReferFormer's conversion).

Layout::

    ROOT/meta_expressions/{train,valid}/meta_expressions.json   4 expressions per object:
        exp ids 4k..4k+3 are annotators 0..3 describing object k (obj_id = its palette id)
    ROOT/{train,valid}/JPEGImages/<video>/<frame>.jpg
    ROOT/{train,valid}/Annotations/<video>/<frame>.png          palette PNGs (every frame)

``Expression.extra`` holds ``annotator`` (0..3) and ``object_index`` (k). The 4-annotator scoring
with the DAVIS unsupervised evaluation is in ``eval/protocols.py``.
"""

from __future__ import annotations

from videoseg_r1.data.base import Expression
from videoseg_r1.data.refytvos import RefYtvosReader


class RefDavisReader(RefYtvosReader):
    name = "refdavis"
    default_split = "valid"

    def _all_expressions(self) -> list[Expression]:
        out = super()._all_expressions()
        by_video: dict[str, list[Expression]] = {}
        for e in out:
            by_video.setdefault(e.video, []).append(e)
        for exps in by_video.values():
            numeric = all(e.exp_id.isdigit() for e in exps)
            order = sorted(exps, key=lambda e: int(e.exp_id)) if numeric else exps
            for i, e in enumerate(order):
                idx = int(e.exp_id) if numeric else i
                e.extra["annotator"] = idx % 4
                e.extra["object_index"] = idx // 4
        return out
