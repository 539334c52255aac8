"""Submission zips for the splits scored by an evaluation server (MeViS ``valid``, Ref-YouTube-VOS ``valid``).

Layouts (what the servers expect):

* MeViS valid: ``<video>/<exp_id>/<frame>.png`` at the root of the zip.
* Ref-YouTube-VOS valid: ``Annotations/<video>/<exp_id>/<frame>.png``, only for the videos the server
  scores (the valid meta minus the videos also listed in ``meta_expressions/test``, which is what
  the reader's ``valid`` split is).

Every PNG is re-encoded as an 8-bit 0/255 mask, whatever form the prediction had (PNG or RLE json).
Every expression and frame must be present; a missing one is an error naming it (the server would
score it 0 silently). The zip is written to a temporary name and renamed when complete.
Called by ``videoseg-r1 evaluate`` when the split has no ground truth.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import cv2
import numpy as np

from videoseg_r1.data.base import BenchmarkReader
from videoseg_r1.eval.protocols import PredictionFileMissing, PredictionStore
from videoseg_r1.names import safe_member


def submission_videos(reader: BenchmarkReader) -> list[str]:
    """The videos the server scores: the reader's split as defined there (Ref-YouTube-VOS valid
    already leaves out the test videos)."""
    return reader.videos()


def write_submission(reader: BenchmarkReader, predictions: str | Path, out_zip: str | Path,
                     progress: bool = True) -> tuple[Path, int]:
    """Write the server's zip from ``predictions``; returns (path, number of expressions)."""
    from tqdm import tqdm

    if reader.name not in ("mevis", "refytvos"):
        raise ValueError(f"{reader.name} has no submission format (only mevis and refytvos valid)")
    store = PredictionStore(predictions)
    prefix = "Annotations/" if reader.name == "refytvos" else ""
    videos = set(submission_videos(reader))
    exprs = [e for e in reader.expressions() if e.video in videos]
    missing = [e.key for e in exprs if not store.has(e)]
    if missing:
        raise PredictionFileMissing(f"{len(missing)} of {len(exprs)} expressions have no prediction under "
                                    f"{store.root} (first: {missing[0]}); the submission needs all of them")
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(f".{out_zip.name}.tmp{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for e in tqdm(exprs, desc="submission", unit="expr", disable=not progress, leave=False):
                frames = reader.frame_names(e.video)
                shape = _pred_shape(store, e, frames, reader)
                masks = store.load(e, frames, shape)
                for fr, m in zip(frames, masks):
                    ok, buf = cv2.imencode(".png", m.astype(np.uint8) * 255)
                    if not ok:  # pragma: no cover
                        raise OSError(f"cannot encode {e.key}/{fr}")
                    zf.writestr(prefix + safe_member(e.video, e.exp_id, f"{fr}.png"), buf.tobytes())
        os.replace(tmp, out_zip)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_zip, len(exprs)


def _pred_shape(store: PredictionStore, expr, frames, reader: BenchmarkReader) -> tuple[int, int]:
    """The frame size predictions must have: the video's frame size."""
    return reader.frame_size(expr.video)
