"""The ablation table of issue 8 on the synthetic benchmark (splits ``valid`` and ``test_ood``).

Rows (every row runs the real pipeline: HTFS -> reasoning -> SAM2 key-frame masks -> XMem):

1. SFT only                              (``--sft``)
2. SFT + GRPO                            (``--grpo``)
3. SFT + GRPO without the length penalty (``--grpo-no-length``)
   rows 1-3 also give the mean number of reasoning tokens, read from the traces;
4. key-frame choice with the GRPO model: first frame / middle frame (``FixedFrameSelector``) / HTFS;
5. SAM2 prompts with the GRPO model: box only / box + positive point / box + both points
   (``SegmenterConfig.use_box/use_positive_point/use_negative_point``).

Columns: J, F, J&F (percent, mean over the scored expressions) and the number of expressions on each
split, J&F per difficulty tier (1-4), and the mean reasoning tokens. Several training seeds
(``--grpo A --grpo B`` or ``--grpo A,B``) give ``mean ± std`` over seeds (sample std, ddof=1).
"HTFS" in row 4 and "box + both points" in row 5 are the very runs of row 2 (same predictions).

Predictions go to ``PRED_DIR/<variant>/<split>/`` in ``videoseg-r1 predict``'s layout (masks, traces
and errors under ``.run/``), so an interrupted run resumes where it stopped; scores come from
``videoseg_r1.eval.evaluate.evaluate`` (restricted to the first ``--limit`` expressions of each split;
an expression whose prediction failed counts as missing, i.e. 0). SAM2 and XMem are loaded once and
shared by every variant; each reasoner is loaded once for all the variants that use it.

    python benchmarks/bench_synthetic_table.py --data-root data/synthetic \\
        --sft runs/small_reasoner/sft/final --grpo runs/small_reasoner/grpo/final \\
        --grpo-no-length runs/small_reasoner_nolen/grpo/final \\
        --sam2 models/synthetic-small/sam2 --xmem models/synthetic-small/xmem.safetensors \\
        --limit 100 --out benchmarks/results/synthetic_table.json
    python benchmarks/bench_synthetic_table.py --quick --limit 2     # CPU smoke test, tiny random models

``--only GLOB`` (repeat or comma list) runs only the variants whose key (``<role>-seed<i>-<frame>-<prompts>``,
the prediction folder's name) matches, e.g. ``--only 'grpo-seed1-*'``: several processes (or
machines, with the same absolute paths) can share the work; a last run without ``--only`` finds every
prediction and only scores (a model is needed only where predictions are missing). Rows whose variants were not run are marked so.

With ``--limit N`` the N expressions of a split are a seeded random sample of it, kept in benchmark
order (``--pick spread``: evenly spaced, which can alias with the per-video order of the tiers;
``--pick first``: the first N,
as ``predict --limit``); the JSON lists them. ``--out X.json`` writes ``X.json`` and ``X.md``. A missing ``--data-root`` is generated first
(``videoseg-r1 synth`` with ``--synth-videos`` videos, splits valid and test_ood).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import gc
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPLITS = ("valid", "test_ood")
TIERS = (1, 2, 3, 4)
METRICS = ("J", "F", "J&F")
PICK_SEED = 0  # --pick random
ROLES = ("sft", "grpo", "grpo_no_length")
PROMPT_SETS = {"box": (True, False, False), "box+pos": (True, True, False), "box+pos+neg": (True, True, True)}


# ----------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One pipeline configuration; its key names its prediction folder."""

    role: str  # which reasoner: sft / grpo / grpo_no_length
    seed: int  # index into that role's model list
    frame: str = "htfs"  # htfs / first / middle
    prompts: str = "box+pos+neg"  # a key of PROMPT_SETS

    @property
    def key(self) -> str:
        return f"{self.role}-seed{self.seed}-{self.frame}-{self.prompts}"


@dataclass
class Row:
    group: int
    name: str
    role: str
    frame: str = "htfs"
    prompts: str = "box+pos+neg"
    tokens: bool = False  # report mean reasoning tokens
    variants: list[Variant] = field(default_factory=list)


def table_rows(models: dict[str, list[str]]) -> list[Row]:
    """The rows of the table, each with one variant per seed of its reasoner (none when not given)."""
    rows = [
        Row(1, "SFT only", "sft", tokens=True),
        Row(2, "SFT + GRPO", "grpo", tokens=True),
        Row(3, "SFT + GRPO, no length penalty", "grpo_no_length", tokens=True),
        Row(4, "key frame: first (GRPO)", "grpo", frame="first"),
        Row(4, "key frame: middle (GRPO)", "grpo", frame="middle"),
        Row(4, "key frame: HTFS (GRPO)", "grpo", frame="htfs"),
        Row(5, "prompts: box (GRPO)", "grpo", prompts="box"),
        Row(5, "prompts: box + pos. point (GRPO)", "grpo", prompts="box+pos"),
        Row(5, "prompts: box + both points (GRPO)", "grpo", prompts="box+pos+neg"),
    ]
    for r in rows:
        r.variants = [Variant(r.role, i, r.frame, r.prompts) for i in range(len(models.get(r.role, [])))]
    return rows


def pick(expressions: list, limit: int | None, how: str) -> list:
    """``limit`` expressions: a seeded random sample (``random``, in benchmark order), the first ones
    (``first``, ``predict --limit``'s choice) or ``spread`` evenly over the split. Evenly spaced picks
    can alias with the fixed order of the tiers inside each video, hence the random default."""
    n = len(expressions)
    if limit is None or limit >= n:
        return list(expressions)
    if how == "first":
        return list(expressions[:limit])
    if how == "random":
        import random

        return [expressions[i] for i in sorted(random.Random(PICK_SEED).sample(range(n), limit))]
    return [expressions[(i * n) // limit] for i in range(limit)]


def split_paths(values: list[str] | None) -> list[str]:
    """Repeated flags and/or comma lists -> one list of paths."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return out


# ----------------------------------------------------------------------------- quick mode


def build_quick(work: Path) -> tuple[dict[str, list[str]], str, str, Path]:
    """Tiny random models (two seeds for GRPO, to exercise the spread) and a tiny dataset."""
    from videoseg_r1.data.synthetic import generate
    from videoseg_r1.reasoning.tiny import save_tiny_reasoner
    from videoseg_r1.segmentation.tiny import build_tiny_sam2, build_tiny_xmem, save_sam2, save_xmem

    mdir = work / "models"
    models: dict[str, list[str]] = {"sft": [], "grpo": [], "grpo_no_length": []}
    for role, seeds in (("sft", (0,)), ("grpo", (1, 2)), ("grpo_no_length", (3,))):
        for s in seeds:
            path = mdir / f"{role}{s}"
            if not (path / "config.json").is_file():
                save_tiny_reasoner(path, seed=s)
            models[role].append(str(path))
    sam2, xmem = mdir / "sam2", mdir / "xmem.pth"
    if not sam2.is_dir():
        save_sam2(*build_tiny_sam2(), sam2)
    if not xmem.is_file():
        save_xmem(build_tiny_xmem(), xmem)
    data = work / "data"
    if not data.is_dir():
        generate(data, num_videos=4, frames=8, size=(64, 48), seed=3, splits=SPLITS, workers=1)
    return models, str(sam2), str(xmem), data


# ----------------------------------------------------------------------------- config and models


def base_config(args):
    """PipelineConfig from --config / --preset (default synthetic-small's settings) and the flags."""
    from videoseg_r1.cli_common import config_from_args

    some_reasoner = next(iter(p for ps in args.models.values() for p in ps), "unused")
    ns = argparse.Namespace(
        config=args.config, preset=None if args.preset == "none" or args.config else args.preset,
        reasoner=some_reasoner, sam2=args.sam2, xmem=args.xmem, propagator="xmem", device=args.device,
        dtype=args.dtype, short_side=args.short_side, model_input_size=args.model_input_size,
        max_new_tokens=args.max_new_tokens, target_frame=None)
    cfg = config_from_args(ns)
    if args.quick:  # tiny models: keep HTFS and decoding short so the smoke test stays fast
        cfg = dataclasses.replace(
            cfg, sampler=dataclasses.replace(cfg.sampler, num_interval_samples=2, num_position_samples=2, top_m=1,
                                             max_rounds=1, interval_max_new_tokens=8, position_max_new_tokens=6,
                                             frame_size=56, max_frames_shown=8),
            reasoner=dataclasses.replace(cfg.reasoner, model_input_size=56, context_frame_size=56))
    return cfg


class Models:
    """SAM2 and XMem loaded once; one reasoner at a time (the previous one is freed)."""

    def __init__(self, config):
        from videoseg_r1.segmentation.keyframe import KeyFrameSegmenter
        from videoseg_r1.segmentation.propagation import make_propagator

        self.config = config
        self.segmenter = KeyFrameSegmenter(config.segmenter)
        self.propagator = make_propagator(config.propagator)
        self._reasoner_path: str | None = None
        self.reasoner = None

    def get_reasoner(self, path: str):
        if path != self._reasoner_path:
            self.reasoner = None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
            from videoseg_r1.reasoning.reasoner import Reasoner

            self.reasoner = Reasoner.from_pretrained(config=dataclasses.replace(self.config.reasoner, model=path))
            self._reasoner_path = path
        return self.reasoner

    def pipeline(self, v: Variant, reasoner_path: str):
        from videoseg_r1.pipeline import FixedFrameSelector, VideoSegR1Pipeline
        from videoseg_r1.segmentation.keyframe import KeyFrameSegmenter

        box, pos, neg = PROMPT_SETS[v.prompts]
        seg_cfg = dataclasses.replace(self.config.segmenter, use_box=box, use_positive_point=pos,
                                      use_negative_point=neg)
        segmenter = KeyFrameSegmenter(seg_cfg, model=self.segmenter.model, processor=self.segmenter.processor,
                                      device=str(self.segmenter.device))
        cfg = dataclasses.replace(self.config, segmenter=seg_cfg,
                                  reasoner=dataclasses.replace(self.config.reasoner, model=reasoner_path))
        components = dict(reasoner=self.get_reasoner(reasoner_path), segmenter=segmenter, propagator=self.propagator)
        if v.frame != "htfs":
            components["frame_selector"] = FixedFrameSelector(v.frame)
        return VideoSegR1Pipeline.from_config(cfg, **components)


# ----------------------------------------------------------------------------- predict (predict_cli's layout)


def predict_split(pipe_factory, reader, expressions, out: Path, variant_info: dict, overwrite: bool,
                  cache_gb: float) -> dict:
    """Run the pipeline on the expressions not done yet in ``out``; predict_cli's folder layout."""
    from videoseg_r1.predict_cli import RUN_DIR, _check_out, _remove_stale_temporaries, predict_video

    run_info = {"benchmark": "synthetic", "split": reader.split, "data_root": str(Path(reader.root).resolve()),
                "variant": variant_info}
    meta = out / RUN_DIR / "run.json"
    if meta.is_file():
        old = json.loads(meta.read_text()).get("variant")
        if old is not None and old != variant_info:
            if not overwrite:
                raise FileExistsError(f"{out} holds predictions of another variant ({old}); pass --overwrite "
                                      "or choose another --pred-dir")
            import shutil

            shutil.rmtree(out)
    _check_out(out, run_info, overwrite)
    todo = [e for e in expressions if not (out / e.video / e.exp_id).is_dir()]
    _remove_stale_temporaries(out, todo)
    done, failed, t0 = 0, 0, time.perf_counter()
    if todo:
        pipe = pipe_factory()
        errors_path = out / RUN_DIR / "errors-0of1.jsonl"
        by_video: dict[str, list] = {}
        for e in todo:
            by_video.setdefault(e.video, []).append(e)
        for video_name, exprs in by_video.items():
            ok, bad = predict_video(pipe, reader, video_name, exprs, out, errors_path, cache_gb)
            done, failed = done + ok, failed + bad
    return {"predicted": done, "failed": failed, "skipped": len(expressions) - len(todo),
            "seconds": time.perf_counter() - t0}


def reasoning_tokens(out: Path, expressions) -> list[int]:
    from videoseg_r1.predict_cli import RUN_DIR

    vals = []
    for e in expressions:
        p = out / RUN_DIR / "traces" / e.video / f"{e.exp_id}.json"
        if p.is_file() and (out / e.video / e.exp_id).is_dir():
            vals.append(int(json.loads(p.read_text()).get("reasoning_tokens", 0)))
    return vals


def score_split(data_root: Path, split: str, pred: Path, expressions, workers: int) -> dict:
    """evaluate() on the split, restricted to ``expressions``: J, F, J&F, n and J&F per tier."""
    from videoseg_r1.eval.evaluate import evaluate
    from videoseg_r1.eval.protocols import summarize

    pred.mkdir(parents=True, exist_ok=True)
    keys = {e.key for e in expressions}
    res = evaluate("synthetic", data_root, split, pred, workers=workers, progress=False, missing="zero")
    rows = [r for r in res.rows if f"{r.video}/{r.exp_id}" in keys]
    summary = summarize("synthetic", rows, "zero")
    allx = summary.get("all expressions", {"n": 0})
    out = {m: _num(allx.get(m)) for m in METRICS}
    out["n"] = int(allx.get("n", 0))
    out["missing"] = sum(1 for r in rows if r.missing)
    out["tiers"] = {str(t): {"J&F": _num(summary.get(f"tier {t}", {}).get("J&F")),
                             "n": int(summary.get(f"tier {t}", {}).get("n", 0))} for t in TIERS}
    return out


def _num(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


# ----------------------------------------------------------------------------- aggregation and output


def stat(values: list) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "values": values}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return {"mean": mean, "std": std, "values": values}


def aggregate(row: Row, scores: dict, tokens: dict) -> dict:
    out = {"group": row.group, "name": row.name, "role": row.role, "frame": row.frame, "prompts": row.prompts,
           "variants": [v.key for v in row.variants], "seeds": len(row.variants), "splits": {}}
    if not row.variants:
        out["status"] = "not run"
        return out
    out["status"] = "ok"
    for split in SPLITS:
        per = [scores[(v.key, split)] for v in row.variants]
        s = {m: stat([p[m] for p in per]) for m in METRICS}
        s["n"] = per[0]["n"]
        s["missing"] = [p["missing"] for p in per]
        s["tiers"] = {t: {"J&F": stat([p["tiers"][t]["J&F"] for p in per]), "n": per[0]["tiers"][t]["n"]}
                      for t in per[0]["tiers"]}
        out["splits"][split] = s
    if row.tokens:
        per_seed = [tokens[v.key] for v in row.variants]
        out["reasoning_tokens"] = stat([sum(t) / len(t) if t else None for t in per_seed])
    return out


def fmt(s: dict | None, digits: int = 1) -> str:
    if not s or s.get("mean") is None:
        return "-"
    text = f"{s['mean']:.{digits}f}"
    if s.get("std") is not None:
        text += f" ± {s['std']:.{digits}f}"
    return text


def table_cells(r: dict) -> tuple[list[str], list[list[str]]]:
    head = ["#", "row"]
    for split in SPLITS:
        head += [f"{split} J", f"{split} F", f"{split} J&F", f"{split} n"] + [f"{split} T{t}" for t in TIERS]
    head += ["seeds", "think tokens"]
    lines = []
    for row in r["rows"]:
        cells = [str(row["group"]), row["name"]]
        for split in SPLITS:
            s = row["splits"].get(split)
            if s is None:
                cells += ["-"] * (4 + len(TIERS))
                continue
            cells += [fmt(s[m]) for m in METRICS] + [str(s["n"])]
            cells += [fmt(s["tiers"][str(t)]["J&F"]) for t in TIERS]
        cells.append(str(row["seeds"]) if row["status"] == "ok" else "not run")
        cells.append(fmt(row.get("reasoning_tokens")) if "reasoning_tokens" in row else "")
        lines.append(cells)
    return head, lines


def _counts(result: dict) -> str:
    return ", ".join(f"{s} {n}" for s, n in result["num_expressions"].items())


def format_text(result: dict) -> str:
    head, lines = table_cells(result)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt_line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
    out = [f"synthetic table: {result['data_root']} (expressions: {_counts(result)}; "
           "J, F, J&F in %, T1-T4 = J&F per difficulty tier)", fmt_line(head), "-" * len(fmt_line(head))]
    out += [fmt_line(c) for c in lines]
    return "\n".join(out)


def format_markdown(result: dict) -> str:
    head, lines = table_cells(result)
    md = [f"Synthetic benchmark (`{result['data_root']}`), expressions: {_counts(result)}; "
          "J, F, J&F in %, T1-T4 = J&F per difficulty tier; mean ± std over seeds where several were given.", "",
          "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    md += ["| " + " | ".join(c) + " |" for c in lines]
    return "\n".join(md) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    from videoseg_r1.presets import PRESETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft", action="append", help="SFT-only reasoner folder(s): repeat or comma list, one per seed")
    p.add_argument("--grpo", action="append", help="SFT + GRPO reasoner folder(s), one per seed")
    p.add_argument("--grpo-no-length", action="append", help="SFT + GRPO without length penalty, one per seed")
    p.add_argument("--sam2", help="SAM2 folder (shared by every variant)")
    p.add_argument("--xmem", help="XMem checkpoint (shared by every variant)")
    p.add_argument("--data-root", type=Path, default=None, help="synthetic dataset (generated if missing)")
    p.add_argument("--synth-videos", type=int, default=100, help="videos to generate when --data-root is missing")
    p.add_argument("--limit", type=int, default=None, help="first N expressions of each split")
    p.add_argument("--pick", choices=["random", "spread", "first"], default="random",
                   help="with --limit: a seeded random sample of the split (default), evenly spaced ones, "
                        "or the first N")
    p.add_argument("--out", type=Path, default=None, help="write the table as OUT (.json) and OUT .md")
    p.add_argument("--pred-dir", type=Path, default=None,
                   help="prediction folders, one per variant (default: next to --out, or a temporary folder)")
    p.add_argument("--overwrite", action="store_true", help="redo a variant folder that holds another variant")
    p.add_argument("--config", help="YAML PipelineConfig (instead of --preset)")
    p.add_argument("--preset", default="synthetic-small", choices=sorted(PRESETS) + ["none"],
                   help="pipeline settings of this preset (model paths come from the flags); default %(default)s")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--short-side", type=int, default=None)
    p.add_argument("--model-input-size", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--only", action="append", metavar="GLOB",
                   help="run only the variants whose key matches (repeat or comma list), e.g. 'grpo-seed1-*'")
    p.add_argument("--eval-workers", type=int, default=1)
    p.add_argument("--cache-gb", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="tiny random models + tiny dataset (CPU smoke test)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    tmp = None
    threads = None
    if args.quick:
        import torch

        # tiny models: one thread is as fast, and does not spin against other busy processes
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        if args.pred_dir is None and args.out is None:
            tmp = tempfile.TemporaryDirectory(prefix="synthetic_table_")
        work = Path(tmp.name) if tmp else (args.pred_dir or args.out.with_suffix("")).parent / "quick_work"
        models, sam2, xmem, data = build_quick(work)
        args.sam2, args.xmem = args.sam2 or sam2, args.xmem or xmem
        args.data_root = args.data_root or data
        args.device = args.device or "cpu"
        args.max_new_tokens = args.max_new_tokens or 12
        args.pred_dir = args.pred_dir or work / "predictions"
    else:
        models = {"sft": split_paths(args.sft), "grpo": split_paths(args.grpo),
                  "grpo_no_length": split_paths(args.grpo_no_length)}
        for name in ("sam2", "xmem", "data_root"):
            if getattr(args, name) is None:
                raise SystemExit(f"--{name.replace('_', '-')} is required (or use --quick)")
        if not any(models.values()):
            raise SystemExit("give at least one reasoner (--sft, --grpo, --grpo-no-length)")
    args.models = models
    if args.pred_dir is None:
        if args.out is not None:
            args.pred_dir = args.out.with_suffix("").with_name(args.out.stem + "_predictions")
        else:
            tmp = tmp or tempfile.TemporaryDirectory(prefix="synthetic_table_")
            args.pred_dir = Path(tmp.name) / "predictions"
    data_root = Path(args.data_root)
    if not data_root.exists():
        from videoseg_r1.data.synthetic import generate

        print(f"generating the synthetic dataset in {data_root} ({args.synth_videos} videos, splits "
              f"{', '.join(SPLITS)}) ...", file=sys.stderr)
        generate(data_root, num_videos=args.synth_videos, splits=SPLITS, progress=sys.stderr.isatty())

    from videoseg_r1.data.registry import get_reader

    readers, exprs = {}, {}
    for split in SPLITS:
        readers[split] = get_reader("synthetic", data_root, split)
        exprs[split] = pick(list(readers[split].expressions()), args.limit, args.pick)

    config = base_config(args)
    rows = table_rows(models)
    only = split_paths(args.only)
    variants: list[Variant] = []
    for r in rows:
        if only:
            r.variants = [v for v in r.variants if any(fnmatch.fnmatchcase(v.key, g) for g in only)]
        for v in r.variants:
            if v not in variants:
                variants.append(v)
    variants.sort(key=lambda v: (ROLES.index(v.role), v.seed))  # each reasoner loaded once
    print(f"{len(variants)} variants x {len(SPLITS)} splits ({', '.join(f'{s}: {len(exprs[s])}' for s in SPLITS)} "
          f"expressions); predictions in {args.pred_dir}", file=sys.stderr)

    loaded: Models | None = None
    scores, tokens, runs = {}, {}, {}
    for v in variants:
        path = models[v.role][v.seed]
        info = {"key": v.key, "reasoner": str(Path(path).resolve()), "frame": v.frame, "prompts": v.prompts}

        def factory(v=v, path=path):  # only called when predictions are missing
            nonlocal loaded
            if not Path(path).exists():
                raise SystemExit(f"--{v.role.replace('_', '-')} {path}: no such folder")
            loaded = loaded or Models(config)
            return loaded.pipeline(v, path)

        tokens[v.key] = []
        for split in SPLITS:
            out = args.pred_dir / v.key / split
            stats = predict_split(factory, readers[split], exprs[split], out, info, args.overwrite, args.cache_gb)
            runs[(v.key, split)] = stats
            scores[(v.key, split)] = score_split(data_root, split, out, exprs[split], args.eval_workers)
            tokens[v.key] += reasoning_tokens(out, exprs[split])
            print(f"  {v.key} {split}: {stats['predicted']} predicted, {stats['skipped']} done before, "
                  f"{stats['failed']} failed ({stats['seconds']:.1f} s); J&F {fmt({'mean': scores[(v.key, split)]['J&F']})}",
                  file=sys.stderr)

    result = {
        "data_root": str(data_root), "limit": args.limit, "pick": args.pick, "quick": bool(args.quick),
        "expressions": {s: [e.key for e in exprs[s]] for s in SPLITS},
        "num_expressions": {s: len(exprs[s]) for s in SPLITS},
        "models": {"sft": models["sft"], "grpo": models["grpo"], "grpo_no_length": models["grpo_no_length"],
                   "sam2": args.sam2, "xmem": args.xmem},
        "config": dataclasses.asdict(config),
        "rows": [aggregate(r, scores, tokens) for r in rows],
        "runs": {f"{k}/{s}": {**runs[(k, s)], **scores[(k, s)]} for (k, s) in runs},
        "pred_dir": str(args.pred_dir), "seconds": time.perf_counter() - t_start,
    }
    print(format_text(result))
    if args.out is not None:
        jpath = args.out if args.out.suffix == ".json" else args.out.with_suffix(".json")
        jpath.parent.mkdir(parents=True, exist_ok=True)
        jpath.write_text(json.dumps(result, indent=1) + "\n")
        jpath.with_suffix(".md").write_text(format_markdown(result))
        print(f"wrote {jpath} and {jpath.with_suffix('.md')}", file=sys.stderr)
    if tmp is not None:
        tmp.cleanup()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
