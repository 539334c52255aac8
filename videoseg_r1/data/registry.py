"""Benchmark name -> reader class; ``get_reader(benchmark, data_root, split)`` is what callers use
(``videoseg-r1 evaluate`` / ``predict``, the training-sample builder)."""

from __future__ import annotations

from pathlib import Path

from videoseg_r1.data.base import BenchmarkReader
from videoseg_r1.data.mevis import MevisReader
from videoseg_r1.data.reasonseg import ReasonSegReader
from videoseg_r1.data.reasonvos import ReasonVosReader
from videoseg_r1.data.refdavis import RefDavisReader
from videoseg_r1.data.refytvos import RefYtvosReader
from videoseg_r1.data.revos import RevosReader
from videoseg_r1.data.synthetic_reader import SyntheticReader

READERS: dict[str, type[BenchmarkReader]] = {
    "revos": RevosReader,
    "mevis": MevisReader,
    "refytvos": RefYtvosReader,
    "refdavis": RefDavisReader,
    "reasonvos": ReasonVosReader,
    "reasonseg": ReasonSegReader,
    "synthetic": SyntheticReader,
}

BENCHMARKS = tuple(READERS)


def get_reader(benchmark: str, data_root: str | Path, split: str | None = None,
               fps: float | None = None) -> BenchmarkReader:
    """The reader of ``benchmark`` over ``data_root`` (``split`` None -> the benchmark's default;
    ``fps`` None -> the frame rate the benchmark publishes, see each reader's ``FRAME_RATE``)."""
    try:
        cls = READERS[benchmark]
    except KeyError:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}") from None
    return cls(data_root, split, fps=fps)
