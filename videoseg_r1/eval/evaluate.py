"""``videoseg-r1 evaluate``: score predicted masks on a benchmark, print a table, write JSON + CSV.

API: ``evaluate(benchmark, data_root, split, predictions, workers=1, ...) -> EvalResult`` and
``write_results(result, "results.json")`` (writes ``results.json`` and ``results.csv`` next to it).
CLI::

    videoseg-r1 evaluate --benchmark {revos,mevis,refytvos,refdavis,reasonvos,reasonseg,synthetic} \\
        --data-root DIR --split SPLIT --predictions DIR [--output results.json] [--workers N]

Splits without ground truth (MeViS ``valid``, Ref-YouTube-VOS ``valid``) are not scored here: the
command writes the server's submission zip instead (``--submission``, default next to ``--output``).
Predictions layout, missing-expression policy and the protocols: ``eval/protocols.py``. Scores are
percentages; per-expression CSV columns: video, exp_id, J, F, J&F, R, num_frames, missing, type_id, ...
``--workers N`` scores expressions in N processes (forked, so the parsed annotations are shared).
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from videoseg_r1.data.base import BenchmarkReader
from videoseg_r1.data.registry import BENCHMARKS, get_reader
from videoseg_r1.eval.protocols import (DavisVideoResult, ExpressionResult, PredictionStore, ScoreOptions,
                                        read_davis_unsupervised_gt, score_davis_video, score_expression,
                                        score_image_expression, summarize, summarize_davis)


@dataclass
class EvalResult:
    """Per-expression rows (fractions) and the summary table (percent) of one evaluation."""

    benchmark: str
    split: str
    rows: list[ExpressionResult]
    summary: dict[str, dict]
    missing: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        def clean(x):
            if isinstance(x, float) and math.isnan(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            return x

        return {"benchmark": self.benchmark, "split": self.split, "num_expressions": len(self.rows),
                "num_missing": len(self.missing), "summary": clean(self.summary), "missing": self.missing,
                "options": self.options}


# ----------------------------------------------------------------------------- parallel map

_STATE: dict[str, Any] = {}


def _run_task(i: int):
    return _STATE["fn"](_STATE["tasks"][i])


def _parallel_map(fn: Callable, tasks: list, workers: int, progress: bool, desc: str) -> list:
    """Ordered map over ``tasks`` with ``workers`` forked processes and a tqdm bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc=desc, unit="expr", disable=not progress, leave=False)
    results = []
    try:
        if workers <= 1 or len(tasks) <= 1 or "fork" not in mp.get_all_start_methods():
            for i, t in enumerate(tasks):
                if i + 1 < len(tasks) and hasattr(fn, "prefetch"):  # overlap the next task's file reading
                    fn.prefetch(tasks[i + 1])
                results.append(fn(t))
                bar.update(1)
            return results
        _STATE.update(fn=fn, tasks=tasks)
        try:
            with mp.get_context("fork").Pool(min(workers, len(tasks))) as pool:
                for r in pool.imap(_run_task, range(len(tasks)), chunksize=1):
                    results.append(r)
                    bar.update(1)
        finally:
            _STATE.clear()
        return results
    finally:
        bar.close()


# ----------------------------------------------------------------------------- API


def evaluate(benchmark: str, data_root: str | Path, split: str | None, predictions: str | Path, *,
             workers: int = 1, progress: bool = True, r_mode: str = "parity", missing: str = "zero",
             reference_rounding: bool | None = None, davis_root: str | Path | None = None) -> EvalResult:
    """Score ``predictions`` on ``benchmark``. Raises on bad input (messages name the file)."""
    reader = get_reader(benchmark, data_root, split)
    if not reader.has_ground_truth:
        raise ValueError(f"{benchmark} split {reader.split!r} has no ground truth in {reader.root}; "
                         f"it is scored by the server: write the submission zip with --submission")
    store = PredictionStore(predictions)
    options = ScoreOptions(r_mode=r_mode, missing=missing)  # type: ignore[arg-type]
    opts = {"r_mode": r_mode, "missing": missing, "workers": workers}
    if benchmark == "refdavis":
        return _evaluate_refdavis(reader, store, workers, progress, davis_root, opts)
    exprs = list(reader.expressions())
    if benchmark in ("revos", "synthetic"):
        _ = reader.meta, reader.mask_dict  # parse once before forking  # type: ignore[attr-defined]
    scorer = score_image_expression if benchmark == "reasonseg" else score_expression
    fn = _ExpressionTask(reader, store, options, scorer)
    rows = _parallel_map(fn, exprs, workers, progress, f"evaluate {benchmark}")
    if benchmark == "reasonvos":  # the official script keys results by (video, obj_id); keep one per key
        seen: dict[tuple, ExpressionResult] = {}
        for e, r in zip(exprs, rows):
            seen[(e.video, e.exp_id)] = r
        rows = list(seen.values())
    missing_keys = [f"{r.video}/{r.exp_id}" for r in rows if r.missing]
    if benchmark in ("revos",):
        opts["reference_rounding"] = True if reference_rounding is None else reference_rounding
    summary = summarize(benchmark, rows, options.missing, reference_rounding)
    return EvalResult(benchmark, reader.split, rows, summary, missing_keys, opts)


class _ExpressionTask:
    def __init__(self, reader, store, options, scorer):
        self.reader, self.store, self.options, self.scorer = reader, store, options, scorer

    def __call__(self, expr) -> ExpressionResult:
        return self.scorer(self.reader, self.store, expr, self.options)

    def prefetch(self, expr) -> None:
        """Let the prediction store start decoding ``expr``'s PNGs while the current one is scored
        (only where the scorer streams them: ReVOS-shaped readers)."""
        if self.scorer is score_expression and hasattr(self.reader, "target_tracks"):
            try:
                frames, shape = self.reader.eval_frames(expr), self.reader.frame_size(expr.video)
            except Exception:  # a bad annotation is reported when that expression is scored
                return
            self.store.plan(expr, frames, shape)


class _DavisTask:
    def __init__(self, reader, store, davis_root):
        self.reader, self.store, self.davis_root = reader, store, davis_root

    def __call__(self, video) -> list[DavisVideoResult]:
        gt = read_davis_unsupervised_gt(self.davis_root, video) if self.davis_root else \
            (self.reader.frame_names(video), self.reader.id_maps(video))
        return [score_davis_video(self.reader, self.store, video, a, gt=gt) for a in range(4)]


def _evaluate_refdavis(reader: BenchmarkReader, store: PredictionStore, workers: int, progress: bool,
                       davis_root, opts) -> EvalResult:
    videos = reader.videos()
    list(reader.expressions())  # parse before forking
    per_video = _parallel_map(_DavisTask(reader, store, Path(davis_root) if davis_root else None), videos,
                              workers, progress, "evaluate refdavis")
    results = [r for group in per_video for r in group]
    rows, missing = [], []
    for r in results:
        missing += r.missing
        for row in r.rows:
            rows.append(ExpressionResult(video=r.video, exp_id=row["exp_id"], j=row["J"], f=row["F"],
                                         num_frames=0, extra={"annotator": r.annotator, "object": row["object"],
                                                              "J_recall": row["J_recall"], "J_decay": row["J_decay"],
                                                              "F_recall": row["F_recall"], "F_decay": row["F_decay"]}))
    opts["davis_root"] = str(davis_root) if davis_root else None
    return EvalResult("refdavis", reader.split, rows, summarize_davis(results), sorted(set(missing)), opts)


# ----------------------------------------------------------------------------- output


def format_table(result: EvalResult) -> str:
    """The summary as an aligned text table."""
    cols: list[str] = []
    for s in result.summary.values():
        for k in s:
            if k not in cols and k != "n":
                cols.append(k)
    cols.append("n")
    name_w = max([len("subset")] + [len(k) for k in result.summary])
    head = f"{'subset':<{name_w}}  " + "  ".join(f"{c:>8}" for c in cols)
    lines = [f"{result.benchmark} ({result.split}): {len(result.rows)} expressions, {len(result.missing)} missing",
             head, "-" * len(head)]
    for name, s in result.summary.items():
        cells = []
        for c in cols:
            v = s.get(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append(f"{'-':>8}")
            elif c == "n":
                cells.append(f"{int(v):>8d}")
            else:
                cells.append(f"{v:8.2f}")
        lines.append(f"{name:<{name_w}}  " + "  ".join(cells))
    return "\n".join(lines)


CSV_COLUMNS = ["video", "exp_id", "J", "F", "J&F", "R", "num_frames", "missing", "type_id", "text"]


def write_results(result: EvalResult, output: str | Path) -> tuple[Path, Path]:
    """Write the JSON summary to ``output`` and the per-expression CSV next to it (same stem, .csv).
    Both are written to temporary files and renamed, so no partial file is left behind."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    csv_path = output.with_suffix(".csv")
    extra_cols: list[str] = []
    for r in result.rows:
        for k in r.extra:
            if k not in extra_cols:
                extra_cols.append(k)
    tmp_csv = csv_path.with_name(f".{csv_path.name}.tmp{os.getpid()}")
    with open(tmp_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS + extra_cols)
        for r in result.rows:
            pct = lambda x: "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(100 * x)  # noqa: E731
            w.writerow([r.video, r.exp_id, pct(r.j), pct(r.f), pct(r.jf), pct(r.r), r.num_frames, int(r.missing),
                        "" if r.type_id is None else r.type_id, r.text] + [r.extra.get(k, "") for k in extra_cols])
    tmp_json = output.with_name(f".{output.name}.tmp{os.getpid()}")
    tmp_json.write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    os.replace(tmp_csv, csv_path)
    os.replace(tmp_json, output)
    return output, csv_path


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument("--data-root", required=True, type=Path, help="the benchmark's root folder, as published")
    parser.add_argument("--split", default=None, help="split to score (default: the benchmark's usual one: "
                        "revos valid, mevis valid_u, refytvos valid, refdavis valid, reasonvos test, "
                        "reasonseg val, synthetic valid; synthetic also takes 'all')")
    parser.add_argument("--predictions", required=True, type=Path,
                        help="PRED/<video>/<exp_id>/<frame>.png (non-zero = foreground) or PRED/<video>/<exp_id>.json")
    parser.add_argument("--output", type=Path, default=None, help="results.json (a per-expression .csv is written next to it)")
    parser.add_argument("--workers", type=int, default=1, help="processes scoring expressions in parallel")
    parser.add_argument("--r-mode", choices=("parity", "corrected"), default="parity",
                        help="ReVOS robustness: 'parity' reproduces the official script's uint8 arithmetic "
                        "(default), 'corrected' counts false positives against the union of targets")
    parser.add_argument("--missing", choices=("zero", "skip"), default="zero",
                        help="a missing prediction folder scores 0 (default, ReVOS/MeViS) or is skipped (ReasonVOS's script)")
    parser.add_argument("--no-reference-rounding", action="store_true",
                        help="ReVOS: average exact per-expression scores instead of the official script's "
                        "per-expression rounding to 0.01")
    parser.add_argument("--davis-root", type=Path, default=None,
                        help="refdavis: score against DAVIS-2017 Annotations_unsupervised/480p under this DAVIS "
                        "root (the official setting) instead of the converted layout's Annotations")
    parser.add_argument("--submission", type=Path, default=None,
                        help="splits without ground truth (mevis valid, refytvos valid): the zip to write")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    reader = get_reader(args.benchmark, args.data_root, args.split)
    if not reader.has_ground_truth:
        from videoseg_r1.eval.submission import write_submission

        out = args.submission or (args.output.with_suffix(".zip") if args.output else
                                  Path(f"{args.benchmark}_{reader.split}_submission.zip"))
        path, n = write_submission(reader, args.predictions, out, progress=not args.no_progress)
        print(f"{args.benchmark} {reader.split} has no public ground truth: wrote the submission zip {path} "
              f"({n} expressions); upload it to the benchmark's evaluation server")
        return 0
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    result = evaluate(args.benchmark, args.data_root, args.split, args.predictions, workers=args.workers,
                      progress=not args.no_progress, r_mode=args.r_mode, missing=args.missing,
                      reference_rounding=False if args.no_reference_rounding else None, davis_root=args.davis_root)
    print(format_table(result))
    if result.missing:
        shown = ", ".join(result.missing[:5]) + (" ..." if len(result.missing) > 5 else "")
        print(f"missing predictions ({len(result.missing)}, scored {'0' if args.missing == 'zero' else 'as skipped'}): {shown}")
    if args.output:
        js, cs = write_results(result, args.output)
        print(f"wrote {js} and {cs}")
    return 0
