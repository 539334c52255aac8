"""Ref-DAVIS17 reader, in the YouTube-VOS layout that ReferFormer's converter writes.

Ref-DAVIS17 (Khoreva, Rohrbach and Schiele, ACCV 2018) gives each object of DAVIS 2017 train/val
referring expressions from two annotators, each writing a *first-frame* expression (from the first
frame only) and a *full-video* expression: four text files ``Davis17_annot{1,2}.txt`` and
``Davis17_annot{1,2}_full_video.txt``. The published numbers are computed on the layout written by
ReferFormer's ``tools/data/convert_davis_to_ytvos.py``::

    ROOT/meta_expressions/{train,valid}/meta_expressions.json
        {"videos": {video: {"frames": ["00000", "00001", ...],
                            "expressions": {exp_id: {"exp": text, "obj_id": "1"}}}}}
    ROOT/{train,valid}/JPEGImages/<video>/<frame>.jpg       DAVIS JPEGImages/480p
    ROOT/{train,valid}/Annotations/<video>/<frame>.png      DAVIS Annotations_unsupervised/480p

* Expression ids (converter, ``create_meta_expressions``): for the k-th object of a video (objects
  sorted by id), ``4k`` = annotator 1 first-frame, ``4k+1`` = annotator 1 full-video, ``4k+2`` =
  annotator 2 first-frame, ``4k+3`` = annotator 2 full-video.
* Scoring (ReferFormer ``inference_davis.py`` / ``eval_davis.py``; VideoLISA
  ``evaluation/refdavis``): the four expression kinds are four "annotator" sets a = 0..3; for each
  set, the masks of a video's objects (expression ``4k + a`` for object k) are merged into one
  palette frame and scored with the DAVIS 2017 *unsupervised* evaluation against
  ``Annotations_unsupervised``; the four J&F are averaged (``eval/protocols.py``).
* Frames: every frame of DAVIS is kept and annotated; DAVIS sequences are 24 fps (Perazzi et al.,
  CVPR 2016, sec. 3: "all sequences ... 24 fps"), so ``FRAME_RATE`` is 24.

``Expression.extra`` holds ``annotator`` (the set a = exp_id mod 4, as scored), ``object_index`` (k),
``annotator_person`` (1 or 2) and ``expression_kind`` ("first_frame" or "full_video").
"""

from __future__ import annotations

from videoseg_r1.data.base import Expression
from videoseg_r1.data.refytvos import RefYtvosReader

DAVIS_FRAME_RATE = 24.0  # Perazzi et al. 2016
EXPRESSION_KINDS = ("first_frame", "full_video")


class RefDavisReader(RefYtvosReader):
    name = "refdavis"
    default_split = "valid"
    FRAME_RATE = DAVIS_FRAME_RATE

    def excluded_videos(self) -> set[str]:
        return set()  # no test meta: the converter writes train and valid only

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
                a = idx % 4
                e.extra.update(annotator=a, object_index=idx // 4, annotator_person=1 + a // 2,
                               expression_kind=EXPRESSION_KINDS[a % 2])
        return out
