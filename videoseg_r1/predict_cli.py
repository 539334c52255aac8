"""``videoseg-r1 predict``: run the pipeline on every expression of a benchmark split.

Writes ``OUT/<video>/<exp_id>/<frame>.png`` (binary, the union of the expression's targets) —
exactly what ``videoseg-r1 evaluate --predictions OUT`` reads — and, for splits without public
ground truth (MeViS ``valid``, Ref-YouTube-VOS ``valid``), the submission zip once every expression
is done. Run bookkeeping lives in ``OUT/.run/``: ``run.json`` (what this folder is), per-expression
traces, and ``errors-<shard>.jsonl`` (failures are recorded and the run goes on).

Resumable: an expression folder appears only by an atomic rename once all its frames are
written, so finished expressions are skipped and an interrupted one is redone. Shardable with
``--shard i/n``; under ``torchrun`` / ``accelerate launch`` each rank takes shard RANK/WORLD_SIZE on
GPU LOCAL_RANK, all writing into the same OUT (that is the merge).

Never a silent success: when expressions fail, the run ends with a summary (how many, the first
error, the error log) and exit code 1; each rank's exit code reflects its own failures. Where a
submission zip is due, the last rank to finish writes it; until then each rank says in one line
why it is not written. Every output path is built from names the reader checked and is checked
again to stay inside OUT (``names.safe_join``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path

from videoseg_r1.cli_common import add_model_arguments, config_from_args, frame_selector_from_args
from videoseg_r1.names import safe_join

RUN_DIR = ".run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from videoseg_r1.data.registry import BENCHMARKS

    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--data-root", required=True, type=Path, help="the benchmark's root folder, as published")
    p.add_argument("--split", default=None, help="split (default: the benchmark's usual evaluation split)")
    p.add_argument("--out", required=True, type=Path, help="prediction folder (evaluate's --predictions)")
    p.add_argument("--shard", default=None, help="i/n: process every n-th expression starting at i "
                   "(default: RANK/WORLD_SIZE under torchrun or accelerate, else 0/1)")
    p.add_argument("--limit", type=int, default=None, help="only the first N expressions (before sharding)")
    p.add_argument("--submission", type=Path, default=None,
                   help="zip to write for splits without ground truth (default OUT.zip)")
    p.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds another run")
    p.add_argument("--cache-gb", type=float, default=2.0, help="decoded-frame cache per video (GiB)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of the benchmark's frames (default: the rate it publishes: refytvos 6, "
                   "refdavis 24, synthetic as generated; 30 where none is published)")
    add_model_arguments(p)


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        return rank, world
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need n >= 1 and 0 <= i < n")
    return i, n


def shard_expressions(expressions: list, index: int, count: int) -> list:
    """Every ``count``-th expression starting at ``index``: shards are disjoint and cover all."""
    return expressions[index::count]


def _check_out(out: Path, run_info: dict, overwrite: bool) -> None:
    """OUT may be new, or a previous run of the same benchmark/split (resumed); anything else is refused."""
    import shutil

    meta = out / RUN_DIR / "run.json"
    if out.exists() and any(out.iterdir()):
        same = False
        if meta.is_file():
            try:
                old = json.loads(meta.read_text())
                same = all(old.get(k) == run_info[k] for k in ("benchmark", "split", "data_root"))
            except (OSError, json.JSONDecodeError):
                same = False
        if not same:
            if not overwrite:
                what = "another run (" + meta.read_text().strip()[:200] + ")" if meta.is_file() else "files that are not a predict run"
                raise FileExistsError(f"--out {out} holds {what}; choose another folder or pass --overwrite")
            if not meta.is_file():
                raise FileExistsError(f"--out {out} does not look like a predict run; refusing to delete it")
            shutil.rmtree(out)
    (out / RUN_DIR).mkdir(parents=True, exist_ok=True)
    if not meta.is_file():
        from videoseg_r1.results import atomic_write_json

        atomic_write_json(meta, run_info)


def expression_dir(out: Path, expr) -> Path:
    """``OUT/<video>/<exp_id>``, refused if the names would lead outside OUT."""
    return safe_join(out, expr.video, expr.exp_id)


def trace_path(out: Path, expr) -> Path:
    """``OUT/.run/traces/<video>/<exp_id>.json``, refused if the names would lead outside it."""
    return safe_join(out / RUN_DIR / "traces", expr.video, f"{expr.exp_id}.json")


def _remove_stale_temporaries(out: Path, expressions: list) -> None:
    """Temp folders of an interrupted earlier run of THESE expressions (other shards' are left alone).
    Matched by exact prefix + pid digits, never by a glob pattern made from a name."""
    import shutil

    for e in expressions:
        for target in (expression_dir(out, e), trace_path(out, e)):
            parent, prefix = target.parent, f".{target.name}.tmp"
            if not parent.is_dir():
                continue
            for tmp in parent.iterdir():
                if tmp.name.startswith(prefix) and tmp.name[len(prefix):].isdigit():
                    if tmp.is_dir():
                        shutil.rmtree(tmp, ignore_errors=True)
                    else:
                        tmp.unlink(missing_ok=True)


def predict_video(pipe, reader, video_name: str, expressions: list, out: Path, errors_path: Path,
                  cache_gb: float = 2.0, on_each=None, errors: list | None = None) -> tuple[int, int]:
    """Run ``pipe`` on the expressions of one video (frames decoded once, cached) and write each
    result in evaluate's layout: the trace, then the mask folder by atomic rename (which marks the
    expression done). A failure, the video's own included, is appended to ``errors_path`` (and, as
    "key: Error: message", to ``errors``) and the rest go on. Returns (predicted, failed)."""
    from videoseg_r1.results import atomic_write_json
    from videoseg_r1.video import CachedVideo

    done = failed = 0
    video, names, video_error = None, None, None
    try:
        video = CachedVideo(reader.open_video(video_name), max_bytes=int(cache_gb * 2**30))
        names = reader.frame_names(video_name)
    except Exception as exc:  # a broken video fails its expressions, not the run
        video_error = exc
    for e in expressions:
        t0 = time.perf_counter()
        try:
            if video_error is not None:
                raise video_error
            result = pipe(video, e.text)
            # the trace first: the mask folder's rename is what marks the expression done
            atomic_write_json(trace_path(out, e), result.trace.to_dict())
            result.tracks.write_binary_pngs(expression_dir(out, e), names)
            done += 1
        except Exception as exc:
            failed += 1
            with open(errors_path, "a") as f:
                f.write(json.dumps({"expression": e.key, "query": e.text, "error": type(exc).__name__,
                                    "message": str(exc), "seconds": time.perf_counter() - t0,
                                    "traceback": traceback.format_exc(limit=5)}) + "\n")
            print(f"failed {e.key}: {type(exc).__name__}: {exc}", file=sys.stderr)
            if errors is not None:
                errors.append(f"{e.key}: {type(exc).__name__}: {exc}")
        if on_each is not None:
            on_each()
    return done, failed


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from videoseg_r1.data.registry import get_reader
    from videoseg_r1.pipeline import load_pipeline

    reader = get_reader(args.benchmark, args.data_root, args.split, fps=args.fps)
    rank, world = parse_shard(args.shard)
    out: Path = args.out
    run_info = {"benchmark": args.benchmark, "split": reader.split, "data_root": str(Path(args.data_root).resolve())}
    _check_out(out, run_info, args.overwrite)

    expressions = list(reader.expressions())
    if args.limit is not None:
        expressions = expressions[: args.limit]
    mine = shard_expressions(expressions, rank, world)
    todo = [e for e in mine if not expression_dir(out, e).is_dir()]
    _remove_stale_temporaries(out, todo)
    print(f"{args.benchmark} {reader.split}: {len(expressions)} expressions, shard {rank}/{world} has {len(mine)}, "
          f"{len(mine) - len(todo)} already done", file=sys.stderr)

    config = config_from_args(args)
    if "LOCAL_RANK" in os.environ and config.reasoner.device == "auto":
        import torch

        if torch.cuda.is_available():
            dev = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            config = dataclasses.replace(
                config, reasoner=dataclasses.replace(config.reasoner, device=dev),
                segmenter=dataclasses.replace(config.segmenter, device=dev),
                propagator=dataclasses.replace(config.propagator, device=dev))
    failures, done, errors = 0, 0, []
    errors_path = out / RUN_DIR / f"errors-{rank}of{world}.jsonl"
    if todo:
        selector = frame_selector_from_args(args)
        pipe = load_pipeline(config, **({"frame_selector": selector} if selector else {}))
        by_video: dict[str, list] = {}
        for e in todo:
            by_video.setdefault(e.video, []).append(e)
        bar = tqdm(total=len(todo), desc=f"predict {rank}/{world}", unit="expr", disable=not sys.stderr.isatty())
        for video_name, exprs in by_video.items():
            ok, failed = predict_video(pipe, reader, video_name, exprs, out, errors_path, args.cache_gb,
                                       on_each=lambda: bar.update(1), errors=errors)
            done, failures = done + ok, failures + failed
        bar.close()
    print(f"shard {rank}/{world}: {done} predicted, {len(mine) - len(todo)} skipped (done before), "
          f"{failures} failed")
    if failures:
        print(f"predict incomplete: {failures} of {len(todo)} expressions of shard {rank}/{world} failed "
              f"(first: {errors[0]}); every error is in {errors_path}", file=sys.stderr)

    if not reader.has_ground_truth:
        _finish_submission(reader, args, out, expressions, set(e.key for e in mine))
    return 1 if failures else 0


def _finish_submission(reader, args, out: Path, expressions: list, mine: set[str]) -> None:
    """Write the server's zip once every expression (of every shard) is done; else say in one line
    why it is not written."""
    zip_path = args.submission or out.with_suffix(".zip")
    total = len(list(reader.expressions()))
    if len(expressions) < total:
        print(f"submission zip {zip_path} not written: --limit {args.limit} ran {len(expressions)} of the "
              f"{total} expressions, and the server needs all of them", file=sys.stderr)
        return
    missing = [e for e in expressions if not expression_dir(out, e).is_dir()]
    if not missing:
        from videoseg_r1.eval.submission import write_submission

        path, n = write_submission(reader, out, zip_path, progress=sys.stderr.isatty())
        print(f"wrote the submission zip {path} ({n} expressions)")
        return
    own = [e for e in missing if e.key in mine]
    if own:
        others = len(missing) - len(own)
        why = (f"{len(own)} expressions of this shard failed (first: {own[0].key})"
               + (f", and {others} of other shards are not done" if others else ""))
    else:
        why = (f"{len(missing)} expressions of other shards are not done yet (first: {missing[0].key}); "
               f"the last shard to finish writes it")
    print(f"submission zip {zip_path} not written: {why}", file=sys.stderr)
