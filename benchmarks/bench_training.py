#!/usr/bin/env python
"""Training throughput of the small reasoner through `videoseg-r1 train`'s code: samples/s and MFU.

Runs the real trainers (``training.sft.run_sft`` / ``training.grpo.run_grpo`` on TRL, the stream of
``training.stream``, the collator, the rewards) for ``--steps`` steps and prints, per stage:

* ``pretrain``: grounding pretraining samples (configs/pretrain_small_synthetic.yaml's task mix);
* ``sft``: the reasoning + HTFS samples of SFT;
* ``grpo``: GRPO on reasoning prompts (rollouts + rewards + update), as completions/s.

samples/s comes from the trainer's own wall time per step (``wall_step_s`` of train_log.jsonl, the
first ``--warmup`` steps left out). MFU = achieved model FLOP/s / ``--peak-tflops`` (H100 SXM bf16
dense: 989). The model FLOPs of a sample are counted on the batches the collator makes: 6 x
(text matmul parameters x tokens + vision parameters x patches) + the attention scores (causal text,
windowed / full vision blocks), i.e. the usual 6·N·T accounting plus attention.

    python benchmarks/bench_training.py --stages pretrain,sft,grpo --steps 60      # one GPU
    python benchmarks/bench_training.py --quick                                    # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

H100_BF16_DENSE_TFLOPS = 989.0


# ---------------------------------------------------------------- model FLOPs of a batch


def parameter_counts(model) -> dict[str, int]:
    """Matmul parameters of the text model (embeddings out, the LM head in) and of the vision tower."""
    inner = getattr(model, "model", model)
    visual = inner.visual
    text = inner.language_model
    n_vis = sum(p.numel() for p in visual.parameters())
    n_text = sum(p.numel() for p in text.parameters()) - text.embed_tokens.weight.numel()
    n_head = model.lm_head.weight.numel()
    return {"text": n_text + n_head, "vision": n_vis}


def batch_flops(batch: dict, model) -> float:
    """Training FLOPs (forward + backward = 3x forward) of one collated batch."""
    import numpy as np

    counts = parameter_counts(model)
    cfg = model.config
    text, vision = cfg.text_config, cfg.vision_config
    lengths = batch["attention_mask"].sum(1).numpy().astype(np.float64)
    tokens = float(lengths.sum())
    flops = 2.0 * counts["text"] * tokens
    flops += 2.0 * text.num_hidden_layers * text.hidden_size * float((lengths ** 2).sum())  # causal QK^T + AV
    if "image_grid_thw" in batch:
        grids = batch["image_grid_thw"].numpy().astype(np.float64)
        patches = grids.prod(1)
        flops += 2.0 * counts["vision"] * float(patches.sum())
        window = (vision.window_size // vision.patch_size) ** 2  # patches of one attention window
        full = set(vision.fullatt_block_indexes)
        for layer in range(vision.depth):
            span = patches if layer in full else np.minimum(patches, window)
            flops += 4.0 * vision.hidden_size * float((patches * span).sum())
    return 3.0 * flops


def flops_per_sample(stream_config, processor, model, batches: int = 4, batch_size: int = 64) -> dict:
    """Mean training FLOPs, tokens and patches per sample over the stream's first batches."""
    from videoseg_r1.training.collate import VisionSFTCollator
    from videoseg_r1.training.stream import SampleStream

    stream = SampleStream(stream_config)
    collate = VisionSFTCollator(processor)
    flops = tokens = patches = n = 0.0
    for b in range(batches):
        batch = collate([stream[i] for i in range(b * batch_size, (b + 1) * batch_size)])
        flops += batch_flops(batch, model)
        tokens += float(batch["attention_mask"].sum())
        patches += float(batch["pixel_values"].shape[0]) if "pixel_values" in batch else 0.0
        n += batch_size
    return {"flops": flops / n, "tokens": tokens / n, "patches": patches / n}


# ---------------------------------------------------------------- runs


def wall_step_s(log: Path, warmup: int) -> float | None:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    times = [r["wall_step_s"] for r in rows if "wall_step_s" in r and "loss" in r and r["step"] > warmup]
    return sum(times) / len(times) if times else None


def small_model(path: Path, args) -> Path:
    from train_small_reasoner import model_overrides

    from videoseg_r1.reasoning.tiny import save_tiny_reasoner

    return save_tiny_reasoner(path, seed=0, numbers=args.numbers, **model_overrides(args))


def job(mode: str, model: Path, args, stage: str):
    from videoseg_r1.training.job import load_job_config

    cfg = load_job_config(REPO / "configs" / ("pretrain_small_synthetic.yaml" if stage == "pretrain" else
                                              "sft_small_synthetic.yaml" if stage == "sft" else
                                              "grpo_small_synthetic.yaml"), model=str(model))
    cfg.eval = {}
    cfg.fit_minutes = cfg.max_minutes = 0.0
    cfg.trainer.update(max_steps=args.steps, logging_steps=args.log_every, save_steps=10 ** 9,
                       dataloader_num_workers=args.workers)
    if args.quick:
        cfg.data.samples = type(cfg.data.samples)(model_input_size=56, context_frame_size=56, num_key_frames=1,
                                                  num_reference_frames=1, htfs_frame_size=56, htfs_max_frames_shown=4)
        cfg.trainer.update(per_device_train_batch_size=4, dataloader_num_workers=0,
                           dataloader_persistent_workers=False)
        cfg.trainer.pop("dataloader_prefetch_factor", None)
        cfg.prompts_per_step = 4
        if mode == "grpo":
            cfg.prompts_per_step, cfg.num_generations = 1, 4
            cfg.trainer["max_completion_length"] = 8
    return cfg


def stream_for(stage: str, cfg):
    from videoseg_r1.training.stream import StreamConfig

    if stage == "pretrain":
        return StreamConfig(**{**cfg.data.stream, "samples": cfg.data.samples})
    tasks = {"reasoning": 1.0} if stage == "grpo" else {t: 1.0 for t in cfg.data.samples.tasks}
    return StreamConfig(tasks=tasks, frames=32, samples=cfg.data.samples)


def grpo_dataset(stream_config, n: int):
    """A written-benchmark-like ``datasets.Dataset`` of ``n`` stream reasoning samples (reward columns)."""
    from datasets import Dataset

    from videoseg_r1.training.samples import dataset_features, png_image
    from videoseg_r1.training.stream import SampleStream

    stream = SampleStream(stream_config)
    rows = [dict(stream[i]) for i in range(n)]
    names = list(dataset_features())
    for r in rows:
        r["images"] = [png_image(im) for im in r["images"]]
    return Dataset.from_dict({k: [r[k] for r in rows] for k in names}, features=dataset_features())


def run_stage(stage: str, args, root: Path) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = small_model(root / f"{stage}-init", args)
    mode = "grpo" if stage == "grpo" else "sft"
    cfg = job(mode, model_dir, args, stage)
    stream = stream_for(stage, cfg)
    out = root / stage
    if mode == "sft":
        from videoseg_r1.training.sft import run_sft
        from videoseg_r1.training.stream import stream_dataset

        trainer = run_sft(cfg, stream_dataset(stream), out, save_final=False)
    else:
        from videoseg_r1.training.grpo import run_grpo

        trainer = run_grpo(cfg, grpo_dataset(stream, max(8, cfg.prompts_per_step * (args.steps + 2))), out,
                           save_final=False)
    step = wall_step_s(out / "train_log.jsonl", args.warmup)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    per_step = cfg.prompts_per_step * (cfg.num_generations if mode == "grpo" else 1)
    row = {"stage": stage, "steps": trainer.state.global_step, "samples_per_step": per_step,
           "step_s": step, "samples_per_s": per_step / step if step else None,
           "parameters": sum(p.numel() for p in model.parameters()),
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    if mode == "sft":
        per = flops_per_sample(stream, processor, model, batch_size=16 if args.quick else 64)
        row.update(tokens_per_sample=round(per["tokens"], 1), patches_per_sample=round(per["patches"], 1),
                   gflops_per_sample=round(per["flops"] / 1e9, 3))
        if step:
            achieved = per["flops"] * row["samples_per_s"]
            row.update(tflops=round(achieved / 1e12, 2), mfu=round(achieved / (args.peak_tflops * 1e12), 4))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", default="pretrain,sft,grpo")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS)
    p.add_argument("--numbers", default="integers", choices=["bpe", "digits", "integers"])
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--vision-depth", type=int, default=4)
    p.add_argument("--vision-hidden", type=int, default=192)
    p.add_argument("--vision-heads", type=int, default=3)
    p.add_argument("--vision-intermediate", type=int, default=512)
    p.add_argument("--quick", action="store_true", help="CPU smoke test: a tiny model, 3 steps per stage")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.quick:
        args.steps, args.warmup, args.log_every = 3, 0, 1
        args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate = 32, 1, 2, 1, 64
        args.vision_depth, args.vision_hidden, args.vision_heads, args.vision_intermediate = 1, 16, 1, 32
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:
            rows.append(run_stage(stage, args, Path(tmp)))
    head = "| stage | device | parameters | steps | samples/step | step (s) | samples/s | tokens/sample | GFLOP/sample | TFLOP/s | MFU |"
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def f(v, fmt="{:.3g}"):
        return "–" if v is None else fmt.format(v) if isinstance(v, float) else str(v)

    for r in rows:
        lines.append(f"| {r['stage']} | {r['device']} | {r['parameters']} | {r['steps']} | {r['samples_per_step']} | "
                     f"{f(r['step_s'])} | {f(r['samples_per_s'])} | {f(r.get('tokens_per_sample'))} | "
                     f"{f(r.get('gflops_per_sample'))} | {f(r.get('tflops'))} | {f(r.get('mfu'))} |")
    print("\n".join(lines))
    print("\nGRPO samples are completions (prompts x generations per step); MFU is given for the SFT-type stages.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
