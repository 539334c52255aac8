#!/usr/bin/env python
"""Train a small VideoSeg-R1 reasoner on the synthetic benchmark: SFT warm-up, then GRPO.

A randomly initialised model earns no reward, so — as the paper and VisionReasoner do — a short
supervised warm-up (``videoseg-r1 train sft``) teaches a small Qwen2.5-VL-architecture model (our own
byte-level BPE tokenizer from ``videoseg_r1.reasoning.tiny``) the answer format on the synthetic
``train`` split; GRPO (``videoseg-r1 train grpo``, the full reward of SPEC §2 with every component
logged) then starts from that checkpoint. Everything lands under ``--out``::

    OUT/data/                 synthetic benchmark (generated when missing; or --data-root)
    OUT/init/                 the randomly initialised small model (--init builds it)
    OUT/configs/{sft,grpo}.yaml   the exact job files used (YAML + --set overrides + model folder)
    OUT/samples/<hash>/       training samples built once, shared by both stages (datasets cache)
    OUT/sft/  OUT/grpo/       checkpoints, train_log.jsonl, final/ (a folder the Reasoner loads)
    OUT/logs/{sft,grpo}.log   the stages' console output
    OUT/summary.json  OUT/summary.md   steps/s, tokens/s, peak GPU memory, loss, reward per component

The SFT job (configs/sft_small_synthetic.yaml) also teaches the HTFS interval and position prompts
(``data.samples.tasks``); GRPO trains the reasoning prompt. ``--grpo-name NAME`` puts a GRPO variant
in OUT/NAME (job, log and ``summary_NAME.json`` named alike) from the same SFT model, e.g. without
the length penalty::

    python scripts/train_small_reasoner.py --out runs/small_reasoner --grpo-steps 40 \
        --grpo-name grpo_nolen --set-grpo rewards.use_length_penalty=false

``--ship DIR`` finally writes the GRPO model (the SFT one with ``--grpo-steps 0``) to DIR in bf16, in
shards under 15 MB: the ``models/synthetic-small/reasoner`` folder. ``--set max_minutes=M`` (or
``--set-sft``/``--set-grpo``) ends a stage after M minutes with its final model written; run again to
continue it from its checkpoint.

Resumable: run the same command again (e.g. with larger step counts) and it skips what is done,
continues each stage from its latest ``checkpoint-*`` (the trainers' ``--resume auto``) and rewrites
the summary. A stage is done when ``OUT/<stage>/stage.json`` records at least the requested steps.

On one H100 (benchmarks/results/grpo_small_synthetic.md, run E): SFT of the 4-layer model at batch 32
runs at about 2 steps/s; GRPO with 8 prompts x 8 at 2.2-2.5 s/step (rollouts on the decode engine).
``--set-sft fit_minutes=M`` / ``--set-grpo fit_minutes=M`` size a stage to M minutes (the learning-rate
schedule is re-made for the steps that fit). Within one 10-minute device call, e.g.::

    python scripts/train_small_reasoner.py --out runs/small_reasoner --init --layers 4 \
        --synth-videos 1000 --synth-frames 32 --sft-steps 6000 --grpo-steps 0 \
        --set-sft trainer.per_device_train_batch_size=32 --set-sft prompts_per_step=32 \
        --set-sft fit_minutes=6.5

and GRPO in the next::

    python scripts/train_small_reasoner.py --out runs/small_reasoner --layers 4 --sft-steps 1 \
        --grpo-steps 400 --set-grpo prompts_per_step=8 --set-grpo trainer.per_device_train_batch_size=64 \
        --set-grpo trainer.learning_rate=1e-4 --set-grpo fit_minutes=6.5

Several runs on one GPU (seeds, variants) need ``OMP_NUM_THREADS`` set to their share of the CPU
cores: with torch's default (all cores each) four GRPO runs on 16 cores were 30x slower.

Minuscule CPU smoke run (close to what tests/test_train_small_script.py does, about 30 s)::

    python scripts/train_small_reasoner.py --out /tmp/small --init --synth-videos 1 --synth-frames 6 \\
        --synth-size 64x48 --hidden 32 --layers 1 --heads 2 --kv-heads 1 --intermediate 64 \\
        --vision-depth 1 --vision-hidden 16 --vision-heads 1 --vision-intermediate 32 \\
        --sft-steps 2 --grpo-steps 1 --max-samples 4 --set data.samples.model_input_size=56 \\
        --set data.samples.context_frame_size=56 --set-grpo trainer.max_completion_length=8 \\
        --set prompts_per_step=2 --set-grpo num_generations=4 --set-grpo trainer.per_device_train_batch_size=8 \\
        --set-sft trainer.per_device_train_batch_size=2 --set-sft trainer.dataloader_num_workers=0 \\
        --set-sft trainer.dataloader_persistent_workers=false

``--set KEY=VALUE`` (both stages) / ``--set-sft`` / ``--set-grpo`` override dotted keys of the job
YAML (values parsed as YAML). ``--summary-only`` rewrites the summary from the logs (after an
interrupted run). For several GPUs pass ``--launcher "accelerate launch --config_file
configs/accelerate/<file>.yaml"`` and both stages run under it.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

SHARD_SIZE = "15MB"  # --ship: every file under the 16 MB a shipped file may have (issue 8)
REWARD_COMPONENTS = ("think_format", "answer_format", "accuracy", "non_repeat", "negative_point")
TOTAL = "videoseg_total"
LENGTH_SCALE = "length_scale"
WINDOW = 5  # steps averaged at the start and the end of the reward curve


# ============================================================================ arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (everything goes under it)")
    p.add_argument("--init", action="store_true", help="build the random small model in OUT/init when missing")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="grounding pretraining steps on samples rendered on the fly (configs/pretrain_small_synthetic.yaml; "
                        "0: none); SFT then starts from OUT/pretrain/final")
    p.add_argument("--pretrain-config", default=str(REPO / "configs" / "pretrain_small_synthetic.yaml"))
    p.add_argument("--set-pretrain", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--sft-steps", type=int, default=900, help="SFT optimiser steps (0: GRPO from the previous stage)")
    p.add_argument("--grpo-steps", type=int, default=40, help="GRPO optimiser steps (0: skip GRPO)")
    p.add_argument("--sft-config", default=str(REPO / "configs" / "sft_small_synthetic.yaml"))
    p.add_argument("--grpo-config", default=str(REPO / "configs" / "grpo_small_synthetic.yaml"))
    p.add_argument("--set", dest="set_both", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted key of both job files (e.g. data.samples.model_input_size=112)")
    p.add_argument("--set-sft", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--set-grpo", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-samples", type=int, default=None, help="use at most this many training samples")
    p.add_argument("--grpo-name", default="grpo",
                   help="folder (and job/log/summary name) of the GRPO stage under OUT, so several GRPO variants "
                        "can start from one SFT model, e.g. --grpo-name grpo_nolen "
                        "--set-grpo rewards.use_length_penalty=false (run after, or alongside, the default one)")
    p.add_argument("--ship", default=None, metavar="DIR",
                   help="finally copy the GRPO model (the SFT one with --grpo-steps 0) to DIR as a bf16 "
                        "safetensors folder in shards under 15 MB (what models/synthetic-small/reasoner holds)")
    p.add_argument("--summary-only", action="store_true",
                   help="only rewrite OUT/summary.{json,md} from the logs (e.g. after an interrupted run)")
    p.add_argument("--launcher", default="", help='e.g. "accelerate launch --config_file configs/accelerate/ddp.yaml"')
    g = p.add_argument_group("synthetic data (generated when --data-root is missing)")
    g.add_argument("--data-root", default=None, help="synthetic benchmark folder (default OUT/data)")
    g.add_argument("--synth-videos", type=int, default=160, help="videos over all splits (70%% train)")
    g.add_argument("--synth-frames", type=int, default=32)
    g.add_argument("--synth-size", default="320x240")
    g.add_argument("--synth-seed", type=int, default=0)
    g.add_argument("--synth-splits", default="train,valid,test_ood")
    g.add_argument("--synth-workers", type=int, default=None)
    m = p.add_argument_group("small model (used by --init only)")
    m.add_argument("--hidden", type=int, default=384, help="text hidden size")
    m.add_argument("--layers", type=int, default=6, help="text decoder layers")
    m.add_argument("--heads", type=int, default=6)
    m.add_argument("--kv-heads", type=int, default=2)
    m.add_argument("--intermediate", type=int, default=1024)
    m.add_argument("--vision-depth", type=int, default=4)
    m.add_argument("--vision-hidden", type=int, default=192)
    m.add_argument("--vision-heads", type=int, default=3)
    m.add_argument("--vision-intermediate", type=int, default=512)
    m.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    m.add_argument("--numbers", default="integers", choices=["bpe", "digits", "integers"],
                   help="how the tokenizer writes numbers: one token per integer (default), per digit, or BPE merges")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[train_small_reasoner {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ============================================================================ data and model


def ensure_data(args: argparse.Namespace, out: Path) -> Path:
    from videoseg_r1.data import synthetic as S
    from videoseg_r1.data.synthetic_cli import parse_size

    root = Path(args.data_root) if args.data_root else out / "data"
    if (root / "meta_expressions_train_.json").is_file():
        log(f"synthetic data found: {root}")
        return root
    if args.data_root and root.exists() and not S.is_synthetic_output(root):
        raise SystemExit(f"--data-root {root} exists but holds no synthetic train split")
    splits = tuple(s.strip() for s in args.synth_splits.split(",") if s.strip())
    log(f"generating {args.synth_videos} synthetic videos ({','.join(splits)}) into {root}")
    t0 = time.perf_counter()
    workers = args.synth_workers or max(1, min(16, (os.cpu_count() or 2)))
    S.generate(root, num_videos=args.synth_videos, frames=args.synth_frames, size=parse_size(args.synth_size),
               seed=args.synth_seed, splits=splits, workers=workers if args.synth_videos >= 8 else 1)
    log(f"synthetic data written in {time.perf_counter() - t0:.1f} s")
    return root


def mrope_section(head_dim: int) -> list[int]:
    """Qwen2.5-VL's temporal/height/width split of the rotary half-dimension (16/24/24 of 64)."""
    half = head_dim // 2
    t = max(1, half // 4)
    h = (half - t) // 2
    return [t, h, half - t - h]


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    if args.hidden % args.heads or args.heads % args.kv_heads or args.vision_hidden % args.vision_heads:
        raise SystemExit("hidden must divide by heads, heads by kv-heads, vision-hidden by vision-heads")
    head_dim = args.hidden // args.heads
    depth = args.vision_depth
    text = dict(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": mrope_section(head_dim)})
    vision = dict(depth=depth, hidden_size=args.vision_hidden, intermediate_size=args.vision_intermediate,
                  num_heads=args.vision_heads, out_hidden_size=args.hidden,
                  fullatt_block_indexes=sorted({(depth - 1) // 2, depth - 1}), window_size=112)
    return {"text_config": text, "vision_config": vision}


def ensure_model(args: argparse.Namespace, out: Path) -> Path:
    path = out / "init"
    if (path / "config.json").is_file():
        log(f"initial model found: {path}")
        return path
    if not args.init:
        raise SystemExit(f"no initial model in {path}: pass --init to build it")
    from videoseg_r1.reasoning.tiny import save_tiny_reasoner

    overrides = model_overrides(args)
    save_tiny_reasoner(path, seed=args.seed, numbers=args.numbers, **copy.deepcopy(overrides))
    from safetensors import safe_open

    n = 0
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                n += math.prod(fh.get_slice(k).get_shape())
    (path / "small_model.json").write_text(json.dumps({"parameters": n, "seed": args.seed, "numbers": args.numbers,
                                                       **overrides}, indent=1))
    log(f"initial model written: {path} ({n / 1e6:.2f} M parameters)")
    return path


# ============================================================================ job files


def set_dotted(cfg: dict, item: str) -> None:
    if "=" not in item:
        raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--set {key}: {part} is not a mapping")
    from videoseg_r1.config import yaml_load as load_text

    node[parts[-1]] = load_text(value)  # reads '2e-3' as a float too


def resolve_job(path: str, sets: list[str], model: Path, out_file: Path) -> dict:
    import yaml

    cfg = yaml_load(Path(path))
    for item in sets:
        set_dotted(cfg, item)
    cfg["model"] = str(model)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def yaml_load(path: Path) -> dict:
    from videoseg_r1.config import yaml_load as load_text

    return load_text(Path(path).read_text()) or {}


def samples_cache(out: Path, cfg: dict, data_root: Path, max_samples: int | None) -> Path:
    data = cfg.get("data") or {}
    key = json.dumps({"root": str(data_root.resolve()), "split": data.get("split", "train"),
                      "samples": data.get("samples") or {}, "max_samples": max_samples}, sort_keys=True)
    return out / "samples" / hashlib.sha1(key.encode()).hexdigest()[:12]


# ============================================================================ stages


def stage_done(stage_dir: Path, steps: int) -> bool:
    marker = stage_dir / "stage.json"
    if not marker.is_file() or not (stage_dir / "final" / "config.json").is_file():
        return False
    try:
        return int(json.loads(marker.read_text()).get("steps", -1)) >= steps
    except (ValueError, OSError):
        return False


TQDM_BAR = re.compile(r"\s*\d+%\|[^|]*\|[^\]]*\]")  # "  5%|5    | 21/400 [00:07<02:10,  2.9it/s]"


def console_parts(line: str) -> list[str]:
    """What of a stage's output line goes to the console: not the progress bars (the log file keeps
    them), but a message printed while a bar is drawn, which shares the bar's line.

    >>> console_parts("\\r  5%|5    | 21/400 [00:07<02:10,  2.9it/s]fit_minutes 6: 3068 ms/step -> 114 steps\\n")
    ['fit_minutes 6: 3068 ms/step -> 114 steps']
    >>> console_parts("100%|##########| 2/2 [00:00<00:00, 52.0it/s]\\n"), console_parts("  {'loss': 0.5}\\n")
    ([], ["  {'loss': 0.5}"])
    """
    parts = (TQDM_BAR.sub("", part).rstrip() for part in line.split("\r"))
    return [part for part in parts if part.strip()]


def run_stage(stage: str, args: argparse.Namespace, out: Path, job_file: Path, data_root: Path,
              cache: Path, steps: int) -> dict:
    """Run stage ``stage`` ('sft', or a GRPO folder name) in a subprocess; its folder is OUT/<stage>."""
    stage_dir = out / stage
    cmd = [*shlex.split(args.launcher)] if args.launcher else [sys.executable]
    cmd += ["-m", "videoseg_r1.cli", "train", "grpo" if stage not in ("sft", "pretrain") else "sft",
            "--config", str(job_file), "--output-dir", str(stage_dir), "--max-steps", str(steps), "--resume", "auto"]
    if stage == "pretrain":  # samples rendered on the fly: no data folder, no cache
        cmd += ["--benchmark", "synthetic_stream"]
    else:
        cmd += ["--benchmark", "synthetic", "--data-root", str(data_root), "--dataset-cache", str(cache)]
    if args.max_samples is not None:
        cmd += ["--max-samples", str(args.max_samples)]
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log(f"{stage}: {' '.join(shlex.quote(c) for c in cmd)}")
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [env.get("PYTHONPATH", ""), str(REPO)] if p)
    t0 = time.perf_counter()
    with open(out / "logs" / f"{stage}.log", "a") as fh:
        fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                bufsize=1)
        done_steps = steps
        for line in proc.stdout:
            fh.write(line)
            if line.startswith('{"final_model"'):  # the trainer's last line: the steps actually run
                done_steps = int(json.loads(line)["steps"])
            for part in console_parts(line):
                sys.stdout.write(f"  [{stage}] {part}\n")
        code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{stage} failed with exit code {code}; see {out / 'logs' / f'{stage}.log'}")
    info = {"steps": done_steps, "requested_steps": steps, "wall_s": round(wall, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    (stage_dir / "stage.json").write_text(json.dumps(info, indent=1))
    log(f"{stage}: {done_steps} of {steps} steps done in {wall:.1f} s (process wall time, start-up included)")
    return info


# ============================================================================ summary


def eval_rows(path: Path) -> list[dict]:
    """The learning-curve rows (``eval/...`` keys, training.stream_eval) of a train_log.jsonl, one per step."""
    by_step: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if any(k.startswith("eval/") for k in row):
                by_step[int(row["step"])] = row
    return [by_step[k] for k in sorted(by_step)]


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(per-step rows, run-end rows) of a train_log.jsonl; a step logged twice (resumed run) keeps the
    last row."""
    steps: dict[int, dict] = {}
    ends = []
    if not path.is_file():
        return [], []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "train_runtime" in row:
            ends.append(row)
        elif "loss" in row:
            steps[int(row["step"])] = row
    return [steps[k] for k in sorted(steps)], ends


def _mean(values: list[float]) -> float | None:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return round(sum(values) / len(values), 4) if values else None


def stage_summary(stage: str, out: Path, job: dict) -> dict:
    rows, ends = read_log(out / stage / "train_log.jsonl")
    if not rows and ends:  # fewer steps than logging_steps: only the run-end row
        rows = [{**ends[-1], "loss": ends[-1].get("train_loss")}]
    s: dict[str, Any] = {"steps": max([int(r["step"]) for r in rows + ends], default=0)}
    if not rows:
        return s
    runtime = sum(float(e["train_runtime"]) for e in ends)
    steps_run = sum(float(e.get("train_steps_per_second", 0)) * float(e["train_runtime"]) for e in ends)
    if runtime > 0:
        s["train_runtime_s"] = round(runtime, 1)
        s["steps_per_s"] = round(steps_run / runtime, 3)
    peaks = [r["gpu_mem_peak_gib"] for r in rows if "gpu_mem_peak_gib" in r]
    if peaks:
        s["gpu_mem_peak_gib"] = max(peaks)
    s["loss_first"], s["loss_last"] = rows[0].get("loss"), rows[-1].get("loss")
    curve = eval_rows(out / stage / "train_log.jsonl")
    if curve:
        s["eval"] = curve
    if stage in ("sft", "pretrain"):
        acc = [r.get("mean_token_accuracy") for r in rows]
        s["token_accuracy_first"], s["token_accuracy_last"] = acc[0], acc[-1]
        if runtime > 0 and rows[-1].get("num_tokens"):
            s["tokens_per_s"] = round(float(rows[-1]["num_tokens"]) / runtime, 1)  # prompt + answer tokens
        return s
    per_step = int(job.get("prompts_per_step", 16)) * int(job.get("num_generations", 8))
    s["completions_per_step"] = per_step
    times = [float(r["step_time"]) for r in rows if "step_time" in r]
    lengths = [float(r.get("completions/mean_length", 0)) for r in rows]
    if times:
        s["step_time_mean_s"] = round(sum(times) / len(times), 3)
        s["steps_per_s_from_step_time"] = round(len(times) / sum(times), 3)
        s["generated_tokens_per_s"] = round(sum(l * per_step for l in lengths[-len(times):]) / sum(times), 1)
    elif runtime > 0:
        s["generated_tokens_per_s"] = round(sum(l * per_step for l in lengths) / runtime, 1)
    if runtime > 0 and rows[-1].get("num_tokens"):
        s["tokens_per_s"] = round(float(rows[-1]["num_tokens"]) / runtime, 1)  # prompt + completion tokens
    s["completion_length_first"], s["completion_length_last"] = lengths[0], lengths[-1]
    think = [r.get("think_tokens/mean") for r in rows]
    s["think_tokens_first"], s["think_tokens_last"] = think[0], think[-1]
    k = min(WINDOW, max(1, len(rows) // 2))
    s["window"] = k
    curve = {}
    for name in (TOTAL, *REWARD_COMPONENTS, LENGTH_SCALE):
        key = f"rewards/{name}/mean"
        vals = [r.get(key) for r in rows]
        if all(v is None for v in vals):
            continue
        curve[name] = {"first": _mean(vals[:k]), "last": _mean(vals[-k:]),
                       "per_step": [None if v is None else round(float(v), 4) for v in vals]}
    s["rewards"] = curve
    s["kl_last"] = rows[-1].get("kl")
    return s


def hardware() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}"
        return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"
    except ImportError:  # pragma: no cover
        return "unknown"


def summary_name(args: argparse.Namespace) -> str:
    return "summary" if args.grpo_name == "grpo" else f"summary_{args.grpo_name}"


def write_summary(out: Path, args: argparse.Namespace, jobs: dict[str, dict], argv: list[str]) -> dict:
    model_info = {}
    if (out / "init" / "small_model.json").is_file():
        model_info = json.loads((out / "init" / "small_model.json").read_text())
    summary = {
        "command": "python scripts/train_small_reasoner.py " + " ".join(shlex.quote(a) for a in argv),
        "hardware": hardware(),
        "model_parameters": model_info.get("parameters"),
        "stages": {st: {**stage_summary(st, out, jobs[st]),
                        **(json.loads((out / st / "stage.json").read_text())
                           if (out / st / "stage.json").is_file() else {})}
                   for st in jobs},
    }
    (out / f"{summary_name(args)}.json").write_text(json.dumps(summary, indent=1))
    (out / f"{summary_name(args)}.md").write_text(summary_markdown(summary))
    return summary


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def summary_markdown(summary: dict) -> str:
    lines = [f"Command: `{summary['command']}`", "", f"Hardware: {summary['hardware']}",
             f"Model parameters: {summary.get('model_parameters')}", ""]
    grpo = next((v for k, v in summary["stages"].items() if k not in ("sft", "pretrain")), {})
    sft = summary["stages"].get("sft", {})
    pre = summary["stages"].get("pretrain", {})
    lines += ["| stage | steps | steps/s | tokens/s | peak GPU memory (GiB) | loss first → last |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, st, tok in (("pretraining", pre, pre.get("tokens_per_s")), ("SFT", sft, sft.get("tokens_per_s")),
                          ("GRPO", grpo, grpo.get("generated_tokens_per_s"))):
        if st:
            rate = st.get("steps_per_s", st.get("steps_per_s_from_step_time"))  # no run-end row: interrupted
            lines.append(f"| {name} | {st.get('steps')} | {_fmt(rate)} | {_fmt(tok)} | "
                         f"{_fmt(st.get('gpu_mem_peak_gib'))} | {_fmt(st.get('loss_first'))} → "
                         f"{_fmt(st.get('loss_last'))} |")
    lines += ["", "SFT tokens/s: prompt + answer tokens trained on; GRPO tokens/s: generated completion "
              "tokens per second of step time."]
    for name, st in (("pretraining", pre), ("SFT", sft), ("GRPO", grpo)):
        curve = st.get("eval") or []
        if curve:
            keys = [k for k in curve[-1] if k.startswith("eval/") and not k.endswith("/n")]
            lines += ["", f"{name}: held-out stream samples (training.stream_eval), by step:", "",
                      "| step | " + " | ".join(k[5:] for k in keys) + " |", "| ---: |" + " ---: |" * len(keys)]
            lines += [f"| {r['step']} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in curve]
    if grpo.get("rewards"):
        k = grpo["window"]
        lines += ["", f"GRPO reward, mean over the first {k} vs the last {k} steps "
                  f"({grpo.get('completions_per_step')} completions per step):", "",
                  f"| reward | first {k} | last {k} | change |", "| --- | ---: | ---: | ---: |"]
        for name, c in grpo["rewards"].items():
            diff = None if c["first"] is None or c["last"] is None else round(c["last"] - c["first"], 4)
            lines.append(f"| {name} | {_fmt(c['first'])} | {_fmt(c['last'])} | {_fmt(diff)} |")
    return "\n".join(lines) + "\n"


# ============================================================================ main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stages = ("pretrain", "sft", args.grpo_name)
    if args.summary_only:
        jobs = {st: yaml_load(out / "configs" / f"{st}.yaml") for st in stages
                if (out / "configs" / f"{st}.yaml").is_file()}
        write_summary(out, args, jobs, argv)
        print((out / f"{summary_name(args)}.md").read_text())
        return 0
    data_root = ensure_data(args, out) if args.sft_steps > 0 or args.grpo_steps > 0 else None
    init = ensure_model(args, out)
    grpo = args.grpo_name
    steps = {"pretrain": args.pretrain_steps, "sft": args.sft_steps, grpo: args.grpo_steps}
    before_sft = out / "pretrain" / "final" if args.pretrain_steps > 0 else init
    start = {"pretrain": init, "sft": before_sft, grpo: out / "sft" / "final" if args.sft_steps > 0 else before_sft}
    sets = {"pretrain": args.set_pretrain, "sft": args.set_sft, grpo: args.set_grpo}
    configs = {"pretrain": args.pretrain_config, "sft": args.sft_config, grpo: args.grpo_config}
    jobs: dict[str, dict] = {}
    for stage in stages:
        if steps[stage] <= 0:
            log(f"{stage}: skipped (0 steps)")
            continue
        job_file = out / "configs" / f"{stage}.yaml"
        jobs[stage] = resolve_job(configs[stage], args.set_both + sets[stage], start[stage], job_file)
        if stage_done(out / stage, steps[stage]):
            log(f"{stage}: already done ({out / stage / 'stage.json'})")
            continue
        if not (start[stage] / "config.json").is_file():
            raise SystemExit(f"no starting model for {stage} in {start[stage]}")
        cache = samples_cache(out, jobs[stage], data_root, args.max_samples) if data_root else None
        run_stage(stage, args, out, job_file, data_root, cache, steps[stage])
        write_summary(out, args, jobs, argv)
    summary = write_summary(out, args, jobs, argv)
    print((out / f"{summary_name(args)}.md").read_text())
    log(f"summary: {out / summary_name(args)}.json")
    if args.ship:
        final = out / (grpo if args.grpo_steps > 0 else "sft" if args.sft_steps > 0 else "pretrain") / "final"
        log(f"shipped model: {ship_model(final, Path(args.ship))}")
    return 0 if summary else 1


def ship_model(final: Path, dest: Path) -> Path:
    """``final`` (a float32 reasoner folder) re-saved to ``dest`` in bf16, shards under ``SHARD_SIZE``,
    with its processor, tokenizer and inference settings (``videoseg_r1.json``); a folder
    ``Reasoner.from_pretrained`` loads. The shipped folder records no separate stage-1 model: the
    base it was trained from is not shipped, and the small reasoner learned the HTFS prompts itself
    (its SFT tasks), so it answers them (models/README.md)."""
    import shutil

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from videoseg_r1.model_settings import read_model_settings, write_model_settings
    from videoseg_r1.training.job import save_for_inference

    model = AutoModelForImageTextToText.from_pretrained(final, dtype=torch.bfloat16)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    save_for_inference(model, AutoProcessor.from_pretrained(final), tmp, max_shard_size=SHARD_SIZE)
    settings = read_model_settings(final)
    if settings:
        write_model_settings(tmp, {**settings, "base_model": None})
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


if __name__ == "__main__":
    sys.exit(main())
