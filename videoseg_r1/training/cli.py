"""``videoseg-r1 train {grpo,sft}``: build the training samples of a benchmark and run TRL.

    videoseg-r1 train grpo --config configs/grpo_7b_1gpu_lora.yaml --benchmark revos \\
        --data-root data/ReVOS --output-dir runs/grpo7b
    accelerate launch --config_file configs/accelerate/zero3_8gpu.yaml -m videoseg_r1.cli \\
        train grpo --config configs/grpo_7b_8gpu_zero3.yaml --benchmark revos --data-root ... \\
        --output-dir runs/grpo7b_8gpu

Command-line flags override the YAML (``--model``, ``--benchmark``, ``--data-root``, ``--split``,
``--max-steps``, ``--max-samples``, ``--difficulty-file``). ``--resume auto`` continues from the
latest ``checkpoint-*`` in the output folder. The trained model lands in ``<output-dir>/final``;
pass that folder to ``segment`` / ``predict`` as the reasoner.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", choices=["grpo", "sft"], help="GRPO (the paper) or the SFT baseline")
    parser.add_argument("--config", default=None, help="YAML job file (configs/grpo_*.yaml, configs/sft_*.yaml)")
    parser.add_argument("--benchmark", default=None,
                        help="training data: revos, mevis, refytvos, refdavis or synthetic; several "
                             "comma-separated (e.g. revos,mevis,refytvos) train together; synthetic_stream "
                             "renders synthetic samples on the fly (no --data-root; data.stream in the job file)")
    parser.add_argument("--data-root", default=None,
                        help="folder of the benchmark (comma-separated, one per --benchmark)")
    parser.add_argument("--split", default=None, help="split to train on (default: train)")
    parser.add_argument("--output-dir", required=True, help="checkpoints, train_log.jsonl and final/")
    parser.add_argument("--model", default=None, help="hub id or folder of the starting model")
    parser.add_argument("--resume", default=None,
                        help="'auto' (latest checkpoint in --output-dir) or a checkpoint folder")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--max-samples", type=int, default=None, help="use at most this many samples")
    parser.add_argument("--difficulty-file", default=None,
                        help="JSON written by `videoseg-r1 rate-difficulty` (else heuristic / synthetic D)")
    parser.add_argument("--dataset-cache", default=None,
                        help="folder to save the built samples to (and load them from on the next run)")


def build_samples(cfg, dataset_cache: str | None = None):
    """The training ``datasets.Dataset`` (built once on the main process when cached).

    Several benchmarks train together when ``benchmark`` and ``data_root`` are comma-separated
    lists of equal length (e.g. ``revos,mevis,refytvos`` with their three folders); their samples
    are concatenated (the trainer shuffles).
    """
    from videoseg_r1.training.samples import BuildReport, build_dataset, load_reader

    if dataset_cache and Path(dataset_cache).is_dir() and any(Path(dataset_cache).iterdir()):
        from datasets import load_from_disk

        return load_from_disk(dataset_cache)
    from videoseg_r1.training.stream import STREAM_BENCHMARK

    if cfg.data.benchmark == STREAM_BENCHMARK:
        from videoseg_r1.training.stream import StreamConfig, stream_dataset

        stream = StreamConfig(**{**cfg.data.stream, "samples": cfg.data.samples})
        print(f"training samples rendered on the fly: {len(stream)} ({stream.num_videos} synthetic "
              f"{stream.split} videos x {stream.samples_per_video}), tasks {stream.tasks}", file=sys.stderr)
        return stream_dataset(stream)
    if not cfg.data.benchmark or not cfg.data.data_root:
        raise ValueError("no training data: pass --benchmark and --data-root (or set data: in the config)")
    benchmarks = [b.strip() for b in str(cfg.data.benchmark).split(",") if b.strip()]
    roots = [r.strip() for r in str(cfg.data.data_root).split(",") if r.strip()]
    if len(benchmarks) != len(roots):
        raise ValueError(f"{len(benchmarks)} benchmark(s) but {len(roots)} data root(s): give one folder per "
                         "benchmark, comma-separated in the same order")
    cfg.data.samples.split = cfg.data.split
    parts = []
    for benchmark, root in zip(benchmarks, roots):
        reader = load_reader(benchmark, root, cfg.data.split)
        report = BuildReport()
        parts.append(build_dataset(reader, benchmark, cfg.data.samples, report, workers=cfg.data.workers))
        print(f"built {report.samples} training samples from {benchmark}/{cfg.data.split}"
              + (f"; skipped {report.skipped}" if report.skipped else ""), file=sys.stderr)
    if len(parts) == 1:
        ds = parts[0]
    else:
        from datasets import concatenate_datasets

        ds = concatenate_datasets(parts)
    if dataset_cache:
        ds.save_to_disk(dataset_cache)
    return ds


def run(args: argparse.Namespace) -> int:
    from videoseg_r1.training.job import load_job_config

    cfg = load_job_config(args.config, model=args.model, benchmark=args.benchmark,
                          data_root=args.data_root, split=args.split)
    if args.config is None or cfg.mode != args.mode:
        cfg.mode = args.mode
    if args.max_steps is not None:
        cfg.trainer["max_steps"] = args.max_steps
    if args.max_samples is not None:
        cfg.data.samples.max_samples = args.max_samples
    if args.difficulty_file is not None:
        cfg.data.samples.difficulty_file = args.difficulty_file
    try:
        from accelerate import PartialState
    except ImportError:
        raise RuntimeError("training needs the [train] extra: pip install 'videoseg-r1[train]'") from None
    state = PartialState()
    with state.main_process_first():
        dataset = build_samples(cfg, args.dataset_cache)
    if cfg.mode == "grpo":
        from videoseg_r1.training.grpo import FINAL_DIR, run_grpo as train
    else:
        from videoseg_r1.training.sft import FINAL_DIR, run_sft as train
    trainer = train(cfg, dataset, args.output_dir, resume=args.resume)
    if state.is_main_process:
        final = Path(args.output_dir) / FINAL_DIR
        print(json.dumps({"final_model": str(final), "steps": trainer.state.global_step}))
    return 0
