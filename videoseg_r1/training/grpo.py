"""GRPO training of the reasoning model on TRL's ``GRPOTrainer`` (SPEC §2).

``run_grpo(cfg, train_dataset, output_dir)`` configures — never re-implements — TRL: the paper's
setup by default (group 8, 16 prompts per step, lr 1e-6, weight decay 0.01, bf16 on GPU, KL 1e-2,
temperature 1.0), full fine-tuning or LoRA, gradient checkpointing, checkpoints every
``save_steps`` and ``resume``. The reward is ``videoseg_r1.rewards.trl_reward_setup``: the
penalised total (weight 1) drives the advantage, and every component is logged per step under
``rewards/<name>/mean`` (also appended to ``<output_dir>/train_log.jsonl``). The final model is
written to ``<output_dir>/final`` with LoRA merged, a folder ``Reasoner.from_pretrained`` loads.

Rollouts (``TrainJobConfig.rollouts``): on CUDA they run on the decode engine
(``reasoning/decode.py``, same tokens as ``generate`` for the same sampling settings, one prefill
per group of ``num_generations``) where it supports the policy; else TRL's ``generate`` path.

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
from videoseg_r1.training.checkpoints import resolve_resume, resumable
from videoseg_r1.training.job import (
    GRPO_MAX_COMPLETION_LENGTH,
    GRPO_PER_DEVICE_BATCH,
    TrainJobConfig,
    check_rollouts,
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
    """A ``TrainerCallback`` appending every log dict (step, loss, rewards/..., step_time, num_tokens,
    ``wall_step_s`` = wall time per optimiser step since the previous log (evaluation included) and,
    on CUDA, the peak GPU memory) to a JSONL file."""
    from transformers import TrainerCallback

    path = Path(path)

    class JsonlLogCallback(TrainerCallback):
        mark = None  # (time, step) of the last log: wall time per optimiser step between logs

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            import time

            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
            now = time.perf_counter()
            if self.mark is not None and state.global_step > self.mark[1] and "wall_step_s" not in row:
                row["wall_step_s"] = round((now - self.mark[0]) / (state.global_step - self.mark[1]), 4)
            self.mark = (now, state.global_step)
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


def build_grpo_trainer(cfg: TrainJobConfig, train_dataset, output_dir: str | Path):
    """The ``GRPOTrainer`` (rollouts as ``cfg.rollouts`` says) that :func:`run_grpo` trains."""
    from videoseg_r1.rewards import trl_reward_setup

    check_rollouts(cfg.rollouts)
    output_dir = Path(output_dir)
    # The config comes first: with DeepSpeed ZeRO-3 it makes from_pretrained load partitioned.
    grpo_args = build_grpo_config(cfg, output_dir)
    model, processor = load_policy(cfg)
    grpo_args.generation_kwargs = build_grpo_config(cfg, output_dir, processor).generation_kwargs
    reward_funcs, _ = trl_reward_setup(cfg.rewards, tokenizer=processor)
    if "task" in train_dataset.column_names:  # the rewards score the reasoning answer only
        train_dataset = train_dataset.filter(lambda task: task == "reasoning", input_columns="task")
    return rollout_trainer_class(cfg.rollouts)(
        model=model,
        reward_funcs=reward_funcs,
        args=grpo_args,
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=cfg.lora.peft_config(),
        callbacks=[jsonl_log_callback(output_dir / LOG_FILE), *time_limit_callbacks(cfg.max_minutes, cfg.fit_minutes)],
    )


def run_grpo(cfg: TrainJobConfig, train_dataset, output_dir: str | Path, resume: str | bool | None = None,
             save_final: bool = True):
    """Train with GRPO; returns the ``GRPOTrainer`` (its ``state.log_history`` holds every log)."""
    output_dir = Path(output_dir)
    trainer = build_grpo_trainer(cfg, train_dataset, output_dir)
    trainer.train(resume_from_checkpoint=resolve_resume(resume, output_dir))
    if save_final:
        export_final(trainer, trainer.processing_class, output_dir / FINAL_DIR, job_model_settings(cfg))
    return trainer


# ---------------------------------------------------------------- rollouts on the decode engine

ENGINE_MESSAGE = "rollouts: decode engine"
_UNDECIDED = object()
# generation settings the decode engine lacks, with their neutral values; another value -> generate
_ENGINE_NEUTRAL = dict(min_p=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, no_repeat_ngram_size=0,
                       bad_words_ids=None, sequence_bias=None, begin_suppress_tokens=None, forced_bos_token_id=None,
                       forced_eos_token_id=None, stop_strings=None, min_length=0, num_beams=1)


def rollout_trainer_class(rollouts: str = "auto"):
    """A ``trl.GRPOTrainer`` subclass whose rollouts run on ``reasoning.decode.DecodeEngine``.

    It overrides ``_generate_single_turn`` with the semantics of TRL's transformers path: prompts
    left-padded (``pad_to_multiple_of`` included), the processor's multimodal fields passed on,
    sampling settings from ``self.generation_config`` merged with the model's as ``generate`` merges
    them, completions through the first id of ``self.eos_token_ids``. Rows that come in consecutive
    groups of ``num_generations`` identical prompts (ids, pixels and grids compared) are prefilled
    once per group (``num_samples``). vLLM, continuous batching, tool images and sampling settings
    the engine lacks (``min_p`` ...) keep TRL's path. ``rollouts`` is ``TrainJobConfig.rollouts``.
    """
    import torch
    from trl import GRPOTrainer
    from trl.models import unwrap_model_for_generation
    from trl.trainer.utils import pad

    from videoseg_r1.reasoning.decode import DecodeEngine, unsupported_reason

    check_rollouts(rollouts)

    class RolloutGRPOTrainer(resumable(GRPOTrainer)):
        rollout_mode = rollouts

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.decode_engine = None
            self._engine_key = None
            self._rollout_why = _UNDECIDED
            self._rollout_logged: set[str] = set()

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                  has_tool_images=False):
            reason = "tool images" if has_tool_images else self.rollout_reason()
            msg = ENGINE_MESSAGE if reason is None else f"rollouts: transformers generate ({reason})"
            if msg not in self._rollout_logged:
                self._rollout_logged.add(msg)
                if self.accelerator.is_main_process:
                    print(msg, flush=True)
            if reason is None:
                try:
                    return self._engine_rollouts(prompt_ids, images, multimodal_fields, num_generations), None
                except Exception as exc:  # noqa: BLE001 - "auto" keeps training on TRL's path
                    if self.rollout_mode != "auto":
                        raise
                    self._rollout_why = f"the decode engine failed: {type(exc).__name__}: {exc}"
                    self.decode_engine = None
                    print(f"rollouts: transformers generate from now on ({self._rollout_why})", flush=True)
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)

        def rollout_reason(self) -> str | None:
            """None when the decode engine makes the rollouts, else why TRL's path does."""
            if self._rollout_why is _UNDECIDED:
                self._rollout_why = self._choose_rollouts()
            return self._rollout_why

        def _choose_rollouts(self) -> str | None:
            if self.rollout_mode == "generate":
                return "rollouts='generate'"
            if self.use_vllm:
                return "vLLM"
            if self.use_transformers_continuous_batching:
                return "continuous batching"
            model = self.accelerator.unwrap_model(self.model_wrapped)
            gen = self._merged_generation_config(model, self.generation_config)
            lacking = sorted(k for k, v in _ENGINE_NEUTRAL.items() if getattr(gen, k, None) not in (None, v))
            if lacking:
                return f"generation settings {lacking} are not in the decode engine"
            if set(_as_list(gen.eos_token_id)) != set(self.eos_token_ids) or gen.max_new_tokens is None:
                return "generation eos_token_id/max_new_tokens differ from the trainer's"
            if self._dist.is_zero3 or self._dist.is_fsdp:
                why = "DeepSpeed ZeRO-3 / FSDP shard the policy"
            elif getattr(model, "peft_config", None):
                why = "LoRA (peft) patches the linear layers"
            else:
                why = unsupported_reason(model)
            if why is not None and self.rollout_mode == "engine":
                raise RuntimeError(f"rollouts: engine cannot run this policy: {why}; "
                                   "set rollouts: generate (or auto)")
            device = next(model.parameters()).device
            if why is None and self.rollout_mode == "auto" and device.type != "cuda":
                why = f"policy on {device.type}"
            return why

        @staticmethod
        def _merged_generation_config(model, config):
            prepare = getattr(model, "_prepare_generation_config", None)
            return prepare(config)[0] if prepare is not None else config

        def _engine_for(self, model) -> DecodeEngine:
            # the engine keeps references to the parameters (the optimizer updates them in place);
            # new storage (re-cast, re-sharded weights) would leave captured graphs stale -> rebuild
            key = (id(model), tuple(p.data_ptr() for p in model.parameters()))
            if self.decode_engine is None or key != self._engine_key:
                self.decode_engine, self._engine_key = DecodeEngine(model), key
            return self.decode_engine

        def _engine_rollouts(self, prompt_ids, images, multimodal_fields, num_generations) -> list[list[int]]:
            fields = _as_tensors(multimodal_fields)
            k = rollout_group_size(prompt_ids, images, fields, num_generations)
            rows = range(0, len(prompt_ids), k)
            if k > 1:
                fields = _take_prompts(_per_prompt_fields(images, fields, len(prompt_ids)), rows)
            left = dict(padding_side="left", pad_to_multiple_of=self.pad_to_multiple_of)
            ids = [torch.tensor(prompt_ids[r]) for r in rows]
            inputs = dict(input_ids=pad(ids, padding_value=self._tokenizer.pad_token_id, **left),
                          attention_mask=pad([torch.ones_like(t) for t in ids], padding_value=0, **left))
            for key, value in fields.items():
                inputs[key] = pad([torch.tensor(x) for x in value], padding_value=0, **left) \
                    if isinstance(value, list) else value
            inputs = super(GRPOTrainer, self)._prepare_inputs(inputs)  # to the device, as TRL does
            with (
                unwrap_model_for_generation(
                    self.model_wrapped, self.accelerator,
                    gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                    generation_kwargs=self.generation_kwargs,
                    gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
                ) as model,
                torch.no_grad(),
            ):
                gen = self._merged_generation_config(model, self.generation_config)
                out = self._engine_for(model).generate(
                    inputs.pop("input_ids"), inputs.pop("attention_mask"), num_samples=k,
                    max_new_tokens=gen.max_new_tokens, min_new_tokens=gen.min_new_tokens or 0,
                    do_sample=bool(gen.do_sample), temperature=_or(gen.temperature, 1.0), top_k=_or(gen.top_k, 0),
                    top_p=_or(gen.top_p, 1.0), repetition_penalty=_or(gen.repetition_penalty, 1.0),
                    eos_token_id=list(self.eos_token_ids), suppress_token_ids=gen.suppress_tokens or (),
                    seed=int(torch.randint(2**62, ())), **inputs)  # from the global RNG, as generate samples
                if hasattr(model.model, "rope_deltas"):
                    model.model.rope_deltas = None  # the prefill's (an inference tensor) must not outlive it
            return [list(t) for t in out.token_ids]

    return RolloutGRPOTrainer


def _or(value, default):
    return default if value is None else value


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _as_tensors(fields: dict) -> dict:
    """The processor's extra fields as TRL's generate path takes them: tensors as they are, per-token
    lists (one list per prompt) kept for left padding, anything else through numpy."""
    import numpy as np
    import torch

    return {k: v if isinstance(v, torch.Tensor) or (isinstance(v, list) and v and isinstance(v[0], list))
            else torch.tensor(np.array(v)) for k, v in fields.items()}


def _per_prompt_fields(images, fields: dict, n: int) -> list[dict] | None:
    """Each prompt's share of the multimodal fields, or None when they cannot be split per prompt.

    Per-token fields are lists per prompt; ``image_grid_thw`` has a row per image (``images[i]`` lists
    prompt i's images) and ``pixel_values`` ``prod(grid)`` rows per image. Other tensors: None.
    """
    per = [{} for _ in range(n)]
    tensors = {k: v for k, v in fields.items() if not isinstance(v, list)}
    for key, value in fields.items():
        if key not in tensors:
            if len(value) != n:
                return None
            for i in range(n):
                per[i][key] = value[i]
    if not tensors:
        return per
    if set(tensors) != {"pixel_values", "image_grid_thw"} or images is None or len(images) != n:
        return None
    grid, pixels = tensors["image_grid_thw"], tensors["pixel_values"]
    counts = [len(x) if x else 0 for x in images]
    rows = grid.prod(-1).tolist()
    if sum(counts) != grid.shape[0] or sum(rows) != pixels.shape[0]:
        return None
    image = row = 0
    for i, count in enumerate(counts):
        n_rows = sum(rows[image:image + count])
        per[i]["image_grid_thw"] = grid[image:image + count]
        per[i]["pixel_values"] = pixels[row:row + n_rows]
        image, row = image + count, row + n_rows
    return per


def _take_prompts(per: list[dict], rows) -> dict:
    """The fields of the prompts ``rows`` (tensors concatenated, per-token lists listed)."""
    import torch

    out = {}
    for key, value in per[0].items():
        parts = [per[r][key] for r in rows]
        out[key] = torch.cat(parts) if isinstance(value, torch.Tensor) else parts
    return out


def rollout_group_size(prompt_ids, images, fields: dict, k: int) -> int:
    """``k`` when the rows form consecutive groups of ``k`` identical prompts (ids, pixels, grids and
    per-token fields all equal; TRL's sampler repeats each prompt ``num_generations`` times in a
    row), else 1. ``fields`` as :func:`_as_tensors` gives them."""
    import torch

    n = len(prompt_ids)
    if k <= 1 or n % k:
        return 1
    per = _per_prompt_fields(images, fields, n)
    if per is None:
        return 1

    def same(a, b):
        return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b

    for start in range(0, n, k):
        for r in range(start + 1, start + k):
            if list(prompt_ids[r]) != list(prompt_ids[start]):
                return 1
            if any(not same(per[r][key], per[start][key]) for key in per[start]):
                return 1
    return k


def job_model_settings(cfg: TrainJobConfig) -> dict:
    """What the trained model's folder records (``model_settings``): the sample layout of the job,
    whether it learned the HTFS prompts, and the frozen stage-1 model (the first model of the chain)."""
    from videoseg_r1.model_settings import root_base_model, training_settings

    samples = cfg.data.samples
    if cfg.data.benchmark == "synthetic_stream":  # (the stream's own task weights rule there)
        tasks = {k for k, w in (cfg.data.stream or {}).get("tasks", {}).items() if w}
    else:
        tasks = set(samples.tasks)
    return training_settings(samples, root_base_model(cfg.model), htfs_tasks=bool(tasks & {"interval", "position"}))


def export_final(trainer, processor, out_dir: str | Path, settings: dict | None = None) -> Path:
    """Save the trained policy as a folder the ``Reasoner`` loads (LoRA merged into the weights),
    with ``settings`` in its ``videoseg_r1.json`` (``model_settings``).

    Full fine-tuning goes through ``trainer.save_model`` (which gathers ZeRO-3 shards); LoRA
    adapters are merged on the main process.
    """
    from videoseg_r1.model_settings import write_model_settings

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
    if settings is not None and trainer.accelerator.is_main_process:
        write_model_settings(out_dir, settings)
    trainer.accelerator.wait_for_everyone()
    return out_dir
