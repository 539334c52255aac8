"""GRPO training of the reasoning model on TRL's ``GRPOTrainer`` (SPEC §2).

``run_grpo(cfg, train_dataset, output_dir)`` configures — never re-implements — TRL: the paper's
setup by default (group 8, 16 prompts per step, lr 1e-6, weight decay 0.01, bf16 on GPU, KL 1e-2,
temperature 1.0), full fine-tuning or LoRA, gradient checkpointing, checkpoints every
``save_steps`` and ``resume``. The reward is ``videoseg_r1.rewards.trl_reward_setup``: the
penalised total (weight 1) drives the advantage, and every component is logged per step under
``rewards/<name>/mean`` (also appended to ``<output_dir>/train_log.jsonl``). The final model is
written to ``<output_dir>/final`` with LoRA merged, a folder ``Reasoner.from_pretrained`` loads.

Multi-GPU / multi-node: launch the same command with ``accelerate launch --config_file
configs/accelerate/<zero3|ddp>.yaml -m videoseg_r1.cli train grpo ...``; optional vLLM rollouts
through TRL's ``use_vllm`` (``trainer: {use_vllm: true, vllm_mode: colocate}``; install
``videoseg-r1[vllm]``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from videoseg_r1.config import GRPO_KL_BETA, GRPO_LR, GRPO_TEMPERATURE
from videoseg_r1.training.job import (
    GRPO_MAX_COMPLETION_LENGTH,
    GRPO_PER_DEVICE_BATCH,
    TrainJobConfig,
    load_policy,
    placeholder_token_ids,
    save_for_inference,
    trainer_defaults,
    trainer_kwargs,
)

log = logging.getLogger(__name__)

FINAL_DIR = "final"
LOG_FILE = "train_log.jsonl"


def grpo_defaults(cfg: TrainJobConfig, cuda: bool) -> dict[str, Any]:
    """The paper's GRPO setup as ``GRPOConfig`` keyword arguments (overridden by ``cfg.trainer``)."""
    per_device = int(cfg.trainer.get("per_device_train_batch_size", GRPO_PER_DEVICE_BATCH))
    out = trainer_defaults(cfg, cuda, per_device, cfg.prompts_per_step * cfg.num_generations, GRPO_LR)
    out.update(
        beta=GRPO_KL_BETA,
        temperature=GRPO_TEMPERATURE,
        num_generations=cfg.num_generations,
        loss_type="grpo",  # the paper trains with GRPO (TRL's default would be DAPO)
        scale_rewards="group",
        max_completion_length=GRPO_MAX_COMPLETION_LENGTH,
        lr_scheduler_type="constant",
        warmup_steps=0,
        log_completions=False,
    )
    return out


def build_grpo_config(cfg: TrainJobConfig, output_dir: str | Path, processor=None):
    """``trl.GRPOConfig`` from our defaults + ``cfg.trainer`` (unknown keys -> a clear error)."""
    import torch
    from trl import GRPOConfig

    from videoseg_r1.rewards import trl_reward_setup

    kwargs = trainer_kwargs(GRPOConfig, grpo_defaults(cfg, torch.cuda.is_available()), cfg)
    _, weights = trl_reward_setup(cfg.rewards)
    kwargs["reward_weights"] = weights
    kwargs["multi_objective_aggregation"] = "sum_then_normalize"  # weights of 0 must not enter the advantage
    if processor is not None:
        gen = dict(kwargs.get("generation_kwargs") or {})
        suppress = sorted(set(gen.get("suppress_tokens") or []) | set(placeholder_token_ids(processor)))
        if suppress and not kwargs.get("use_vllm"):
            gen["suppress_tokens"] = suppress
        kwargs["generation_kwargs"] = gen or None
    return GRPOConfig(output_dir=str(output_dir), **kwargs)


def jsonl_log_callback(path: str | Path):
    """A ``TrainerCallback`` appending every log dict (step, loss, rewards/..., step_time, num_tokens
    and, on CUDA, the peak GPU memory) to a JSONL file."""
    from transformers import TrainerCallback

    path = Path(path)

    class JsonlLogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
            import torch

            if torch.cuda.is_available():  # peak memory of this process since the start, GiB
                row["gpu_mem_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    return JsonlLogCallback()


FIT_PROBE_STEPS = 20  # steps timed (after the first two) before fit_minutes sizes the run
FIT_MARGIN = 0.95  # share of fit_minutes the fitted steps may use (final save and exit after it)


def time_limit_callbacks(minutes: float, fit_minutes: float = 0.0) -> list:
    """Callbacks for the wall-clock limits of a job (``[]`` when both are 0).

    ``minutes``: end training (with a checkpoint) once that long has passed since the first step
    began; the run then ends as usual (final model written), short of ``max_steps``, and
    ``--resume auto`` continues it.

    ``fit_minutes``: time steps 3 .. 2 + ``FIT_PROBE_STEPS``, then cut ``max_steps`` to the steps that
    fit in ``FIT_MARGIN`` of that many minutes since the first step, and re-make the learning-rate
    schedule (transformers' schedules are ``LambdaLR`` of a ``partial`` with ``num_training_steps``)
    for the new total, so a cosine still anneals to its end. The run is then the one
    ``max_steps=<fitted>`` gives (the warm-up is the same while the probe runs inside it).
    """
    if (not minutes or minutes <= 0) and (not fit_minutes or fit_minutes <= 0):
        return []
    import functools
    import time

    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        start = probe_start = None
        fitted = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.start is None:
                self.start, self.first_step = time.perf_counter(), state.global_step

        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
            now = time.perf_counter()
            done = state.global_step - self.first_step
            if fit_minutes and fit_minutes > 0 and self.fitted is None:
                if done == 2:
                    self.probe_start = now
                elif done == 2 + FIT_PROBE_STEPS:
                    self._fit(state, lr_scheduler, (now - self.probe_start) / FIT_PROBE_STEPS, now)
            if minutes and minutes > 0 and now - self.start > minutes * 60:
                control.should_training_stop = True
                control.should_save = True
            if self.fitted is not None and state.global_step >= self.fitted:
                control.should_training_stop = True
                control.should_save = True

        def _fit(self, state, scheduler, per_step: float, now: float) -> None:
            left = fit_minutes * 60 * FIT_MARGIN - (now - self.start)
            total = min(state.max_steps, state.global_step + max(0, int(left / per_step)))
            self.fitted = total
            if total < state.max_steps:
                for i, fn in enumerate(getattr(scheduler, "lr_lambdas", [])):
                    if isinstance(fn, functools.partial) and "num_training_steps" in fn.keywords:
                        scheduler.lr_lambdas[i] = functools.partial(
                            fn.func, *fn.args, **{**fn.keywords, "num_training_steps": total})
                state.max_steps = total
            print(f"fit_minutes {fit_minutes:g}: {per_step * 1000:.0f} ms/step -> {total} steps", flush=True)

    return [TimeLimit()]


def resolve_resume(resume: str | bool | None, output_dir: str | Path) -> str | bool | None:
    """'auto'/True -> the latest ``checkpoint-*`` in ``output_dir`` (None if there is none); a path
    must exist."""
    if resume in (None, False, "", "none"):
        return None
    if resume in (True, "auto", "latest"):
        from transformers.trainer_utils import get_last_checkpoint

        out = Path(output_dir)
        return get_last_checkpoint(str(out)) if out.is_dir() else None
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"checkpoint to resume from not found: {resume}")
    return str(resume)


def run_grpo(cfg: TrainJobConfig, train_dataset, output_dir: str | Path, resume: str | bool | None = None,
             save_final: bool = True):
    """Train with GRPO; returns the ``GRPOTrainer`` (its ``state.log_history`` holds every log)."""
    from trl import GRPOTrainer

    from videoseg_r1.rewards import trl_reward_setup

    output_dir = Path(output_dir)
    # The config comes first: with DeepSpeed ZeRO-3 it makes from_pretrained load partitioned.
    grpo_args = build_grpo_config(cfg, output_dir)
    model, processor = load_policy(cfg)
    grpo_args.generation_kwargs = build_grpo_config(cfg, output_dir, processor).generation_kwargs
    reward_funcs, _ = trl_reward_setup(cfg.rewards, tokenizer=processor)
    if "task" in train_dataset.column_names:  # the rewards score the reasoning answer only
        train_dataset = train_dataset.filter(lambda task: task == "reasoning", input_columns="task")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=grpo_args,
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=cfg.lora.peft_config(),
        callbacks=[jsonl_log_callback(output_dir / LOG_FILE), *time_limit_callbacks(cfg.max_minutes, cfg.fit_minutes)],
    )
    trainer.train(resume_from_checkpoint=resolve_resume(resume, output_dir))
    if save_final:
        export_final(trainer, processor, output_dir / FINAL_DIR)
    return trainer


def export_final(trainer, processor, out_dir: str | Path) -> Path:
    """Save the trained policy as a folder the ``Reasoner`` loads (LoRA merged into the weights).

    Full fine-tuning goes through ``trainer.save_model`` (which gathers ZeRO-3 shards); LoRA
    adapters are merged on the main process.
    """
    out_dir = Path(out_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        if trainer.accelerator.is_main_process:
            save_for_inference(model, processor, out_dir)
    else:
        trainer.save_model(str(out_dir))
        if trainer.accelerator.is_main_process:
            processor.save_pretrained(out_dir)
            gen = model.generation_config
            if getattr(gen, "suppress_tokens", None) is None:
                gen.suppress_tokens = placeholder_token_ids(processor) or None
                gen.save_pretrained(out_dir)
    trainer.accelerator.wait_for_everyone()
    return out_dir
