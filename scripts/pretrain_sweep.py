#!/usr/bin/env python
"""Grounding-pretraining variants side by side on one GPU, and their learning curves in one table.

Each variant is one ``scripts/train_small_reasoner.py --init --pretrain-steps ...`` run (its own
output folder, model, tokenizer and job), started at the same time with its share of the CPU
cores (``OMP_NUM_THREADS`` and DataLoader workers) and sized to ``--minutes`` by ``fit_minutes``,
so that every variant anneals its learning rate inside one device call. The table printed at the
end (also ``OUT/sweep.md`` / ``sweep.json``) holds each variant's held-out curve (``eval/refer/*``
of ``training.stream_eval``: IoU@0.5, point, accuracy reward) against samples seen.

    python scripts/pretrain_sweep.py --out runs/sweep --minutes 6 \\
        --variant "int224:--numbers integers" --variant "dig224:--numbers digits" \\
        --variant "int336:--numbers integers --set-pretrain data.samples.model_input_size=336"

A variant is ``NAME:ARGS``, ARGS added to the common ones (``--common``, default the 4-layer model).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = "--hidden 384 --layers 4 --heads 6 --kv-heads 2 --intermediate 1024"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--variant", action="append", required=True, metavar="NAME:ARGS")
    p.add_argument("--common", default=COMMON, help="arguments every variant gets")
    p.add_argument("--minutes", type=float, default=6.0, help="training minutes per variant (fit_minutes)")
    p.add_argument("--steps", type=int, default=100000, help="upper bound on steps (the time fit cuts it)")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 4, help="CPU cores to share out")
    p.add_argument("--ship-best", default=None, metavar="DIR",
                   help="finally write the variant with the best last IoU@0.5 (then accuracy) to DIR, bf16 shards")
    p.add_argument("--ship-all", default=None, metavar="DIR",
                   help="finally write every variant that finished to DIR/NAME, bf16 shards (to continue from)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = [v.split(":", 1) for v in args.variant]
    share = max(2, args.cpus // len(variants))
    procs = {}
    for name, extra in variants:
        cmd = [sys.executable, str(REPO / "scripts" / "train_small_reasoner.py"), "--out", str(out / name), "--init",
               "--pretrain-steps", str(args.steps), "--sft-steps", "0", "--grpo-steps", "0",
               *shlex.split(args.common), *shlex.split(extra),
               "--set-pretrain", f"fit_minutes={args.minutes}", "--set-pretrain", f"max_minutes={args.minutes * 1.08:.2f}",
               "--set-pretrain", f"trainer.dataloader_num_workers={max(1, share - 1)}"]
        # OpenCV on one thread per process: the DataLoader workers are the parallelism
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, share // 2)), "OPENCV_FOR_THREADS_NUM": "1",
               "PYTHONUNBUFFERED": "1"}
        log = open(out / f"{name}.log", "w")
        log.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        log.flush()
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        print(f"started {name}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    t0 = time.time()
    codes = {}
    for name, (proc, log) in procs.items():
        codes[name] = proc.wait()
        log.close()
        print(f"{name}: exit {codes[name]} after {time.time() - t0:.0f} s", flush=True)
    table = sweep_table(out, [n for n, _ in variants])
    (out / "sweep.md").write_text(table)
    print(table)
    sys.path.insert(0, str(REPO / "scripts"))
    from train_small_reasoner import ship_model

    if args.ship_best:
        best = best_variant(out, [n for n, _ in variants])
        if best is not None:
            print(f"best variant: {best}; shipped to {ship_model(out / best / 'pretrain' / 'final', Path(args.ship_best))}")
    if args.ship_all:
        for name, _ in variants:
            final = out / name / "pretrain" / "final"
            if (final / "config.json").is_file():
                print(f"{name}: shipped to {ship_model(final, Path(args.ship_all) / name)}")
    return 0 if all(c == 0 for c in codes.values()) else 1


def best_variant(out: Path, names: list[str]) -> str | None:
    """The variant whose last held-out evaluation has the best (IoU@0.5, accuracy)."""
    scored = []
    for name in names:
        path = out / name / "summary.json"
        curve = json.loads(path.read_text())["stages"].get("pretrain", {}).get("eval", []) if path.is_file() else []
        if curve and (out / name / "pretrain" / "final" / "config.json").is_file():
            last = curve[-1]
            scored.append(((last.get("eval/refer/iou50") or 0.0, last.get("eval/refer/accuracy") or 0.0), name))
    return max(scored)[1] if scored else None


def sweep_table(out: Path, names: list[str]) -> str:
    rows, data = [], {}
    for name in names:
        summary = out / name / "summary.json"
        if not summary.is_file():
            rows.append(f"| {name} | (no summary) | | | | | |")
            continue
        s = json.loads(summary.read_text())
        st = s["stages"].get("pretrain", {})
        job = json.loads(json.dumps(__import__("yaml").safe_load((out / name / "configs" / "pretrain.yaml").read_text())))
        per_step = int(job.get("prompts_per_step", 1))
        data[name] = {"parameters": s.get("model_parameters"), "steps": st.get("steps"),
                      "steps_per_s": st.get("steps_per_s"), "samples_per_step": per_step, "eval": st.get("eval", [])}
        for r in st.get("eval", []):
            rows.append(f"| {name} | {r['step']} | {r['step'] * per_step} | {r.get('eval/refer/iou50')} | "
                        f"{r.get('eval/refer/point')} | {r.get('eval/refer/accuracy')} | {r.get('eval/refer/parsed')} |")
    (out / "sweep.json").write_text(json.dumps(data, indent=1))
    head = ["| variant | step | samples seen | IoU@0.5 | point | accuracy (0-3) | parsed |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    speed = [f"- {n}: {d['parameters']} parameters, {d['steps']} steps at {d['steps_per_s']} steps/s, "
             f"{d['samples_per_step']} samples/step" for n, d in data.items()]
    return "\n".join(head + rows) + "\n\n" + "\n".join(speed) + "\n"


if __name__ == "__main__":
    sys.exit(main())
