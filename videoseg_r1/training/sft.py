"""The SFT baseline of the paper's SFT-vs-RL ablation, on TRL's ``SFTTrainer``.

Same samples as GRPO (``training.samples``); the target completion is built from the ground truth:
a one-sentence ``<think>`` and the answer JSON with box, centre point and negative point per
object, i.e. exactly the format the rewards score. Loss on the completion tokens only. The final
model goes to ``<output_dir>/final`` (LoRA merged), a folder ``Reasoner.from_pretrained`` loads.
Launch like GRPO (``videoseg-r1 train sft``; ``accelerate launch`` for several GPUs). Batches are made
by ``training.collate.VisionSFTCollator`` (TRL's vision batches without the processor's per-image
host work). A stream (``--benchmark synthetic_stream``, ``training.stream``) already holds
prompt-completion rows and is read in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videoseg_r1.training.grpo import (
    FINAL_DIR,
    LOG_FILE,
    export_final,
    job_model_settings,
    jsonl_log_callback,
    time_limit_callbacks,
)
from videoseg_r1.training.checkpoints import resolve_resume, resumable
from videoseg_r1.training.collate import VisionSFTCollator
from videoseg_r1.training.job import SFT_LR, TrainJobConfig, load_policy, trainer_defaults, trainer_kwargs

SFT_PER_DEVICE_BATCH = 1  # ours: frames make each sample long
SFT_KEEP_COLUMNS = ("prompt", "completion", "images")


def sft_answer_text(query: str, solution: str, neg_points: str | None = None) -> str:
    """The SFT target ``<think>…</think><answer>JSON</answer>`` for one sample.

    >>> sft_answer_text("the dog", '[{"bbox_2d": [1, 2, 30, 40], "point_2d": [10, 20]}]', '[[0, 2]]')
    '<think>The query "the dog" refers to 1 object in the target frame.</think><answer>[{"bbox_2d": [1, 2, 30, 40], "point_2d": [10, 20], "neg_point_2d": [0, 2]}]</answer>'
    """
    items = json.loads(solution)
    negs = json.loads(neg_points) if neg_points else [None] * len(items)
    for item, neg in zip(items, negs):
        if neg is not None:
            item["neg_point_2d"] = neg
    n = len(items)
    think = f'The query "{query}" refers to {n} object{"s" if n != 1 else ""} in the target frame.'
    return f"<think>{think}</think><answer>{json.dumps(items)}</answer>"


def to_sft_dataset(samples):
    """Add the ``completion`` column (conversational) and keep only what ``SFTTrainer`` needs.

    Reasoning samples get :func:`sft_answer_text`; HTFS samples (``task`` interval / position) their
    ``answer`` column."""

    def add(row):
        if row.get("task", "reasoning") != "reasoning":
            return {"completion": [{"role": "assistant", "content": row["answer"]}]}
        text = sft_answer_text(row["query"], row["solution"], row.get("neg_points"))
        return {"completion": [{"role": "assistant", "content": text}]}

    ds = samples.map(add)
    return ds.remove_columns([c for c in ds.column_names if c not in SFT_KEEP_COLUMNS])


def sft_defaults(cfg: TrainJobConfig, cuda: bool) -> dict[str, Any]:
    per_device = int(cfg.trainer.get("per_device_train_batch_size", SFT_PER_DEVICE_BATCH))
    out = trainer_defaults(cfg, cuda, per_device, cfg.prompts_per_step, SFT_LR)
    out.update(
        max_length=None,  # never truncate: cutting image tokens breaks the vision input
        completion_only_loss=True,
    )
    return out


def build_sft_config(cfg: TrainJobConfig, output_dir: str | Path):
    import torch
    from trl import SFTConfig

    kwargs = trainer_kwargs(SFTConfig, sft_defaults(cfg, torch.cuda.is_available()), cfg)
    return SFTConfig(output_dir=str(output_dir), **kwargs)


def eval_callbacks(cfg: TrainJobConfig, train_dataset, processor, log_path) -> list:
    """The learning-curve callback of ``cfg.eval`` (``training.stream_eval``), [] when off. The held-out
    stream takes the training stream's settings, or, for a written benchmark, the job's sample sizes."""
    from videoseg_r1.training.stream import StreamConfig
    from videoseg_r1.training.stream_eval import EvalSettings, held_out_config, stream_eval_callback

    settings = EvalSettings(**cfg.eval)
    if settings.every_steps <= 0 and not (cfg.eval and settings.at_end):
        return []
    train = getattr(train_dataset, "stream_config", None)
    if train is None:
        train = StreamConfig(**{"tasks": settings.tasks or {"reasoning": 1.0}, **cfg.data.stream,
                                "samples": cfg.data.samples})
    return [stream_eval_callback(held_out_config(train, settings), settings, processor, log_path)]


def run_sft(cfg: TrainJobConfig, train_dataset, output_dir: str | Path, resume: str | bool | None = None,
            save_final: bool = True):
    """Supervised fine-tuning on GT answers; returns the ``SFTTrainer``."""
    from trl import SFTTrainer

    output_dir = Path(output_dir)
    streamed = getattr(train_dataset, "stream_config", None) is not None
    if streamed and "train_sampling_strategy" not in cfg.trainer:
        cfg.trainer["train_sampling_strategy"] = "sequential"  # i.i.d. by construction; in order, each
        #   batch renders each of its videos once (training.stream)
    args = build_sft_config(cfg, output_dir)
    model, processor = load_policy(cfg)
    dataset = train_dataset if streamed else to_sft_dataset(train_dataset)
    collator = VisionSFTCollator(processor, completion_only_loss=args.completion_only_loss is not False,
                                 max_length=args.max_length) if streamed or "images" in dataset.column_names else None
    trainer = resumable(SFTTrainer)(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        peft_config=cfg.lora.peft_config(),
        callbacks=[jsonl_log_callback(output_dir / LOG_FILE), *time_limit_callbacks(cfg.max_minutes, cfg.fit_minutes),
                   *eval_callbacks(cfg, train_dataset, processor, output_dir / LOG_FILE)],
    )
    trainer.train(resume_from_checkpoint=resolve_resume(resume, output_dir))
    if save_final:
        export_final(trainer, processor, output_dir / FINAL_DIR, job_model_settings(cfg))
    return trainer
