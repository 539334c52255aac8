"""The training job configuration shared by GRPO and SFT (YAML under ``configs/`` fills it in).

``TrainJobConfig`` holds what is ours (model, data, LoRA, rewards, batch arithmetic); the ``trainer``
mapping is handed to TRL's ``GRPOConfig`` / ``SFTConfig`` unchanged (any of their fields), after our
defaults — the paper's setup — are applied. Read by ``training.grpo``, ``training.sft`` and
``training.cli``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoseg_r1.config import (
    DEFAULT_REASONER_ID,
    GRPO_BATCH_SIZE,
    GRPO_GROUP_SIZE,
    GRPO_WEIGHT_DECAY,
    RewardConfig,
    load_config,
)
from videoseg_r1.training.samples import SampleConfig

# ---------------------------------------------------------------- defaults (ours where the paper is silent)
GRPO_MAX_COMPLETION_LENGTH = 512  # tokens; think budget (<= 128) + answer JSON fit easily; ours
GRPO_PER_DEVICE_BATCH = 8  # completions per device per micro-step (one group); ours
LORA_RANK = 64  # ours
# LoRA learning rates: the best LoRA lr is about 10x the best full-fine-tuning lr, for supervised
# learning and for RL alike, measured with alpha = 32 on every linear layer (Schulman et al. 2025,
# "LoRA Without Regret", Thinking Machines Lab; the factor the tinker cookbook fixes at 10 in
# hyperparam_utils.get_lora_lr_over_full_finetune_lr). At the paper's full-fine-tuning lr of 1e-6
# a LoRA adapter barely moves. With Adam the adapter's update scales with alpha / r, so alpha stays
# at the 32 the factor was measured with (alpha = 2r would make the same lr 4x larger at r = 64).
LORA_ALPHA = 32
LORA_LR_FACTOR = 10.0  # LoRA lr = LORA_LR_FACTOR x the full-fine-tuning lr (GRPO 1e-5, SFT 1e-4)
LORA_DROPOUT = 0.05  # ours
# Linear layers of the language model only (the vision tower stays frozen); names shared by
# Qwen2-VL, Qwen2.5-VL and Qwen3-VL. A regex, so the vision blocks' "qkv"/"proj" never match.
LORA_TARGET_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
SFT_LR = 1e-5  # SFT baseline learning rate; ours
ROLLOUTS = ("auto", "engine", "generate")  # TrainJobConfig.rollouts


@dataclass
class LoraSettings:
    """LoRA on the language model (peft). ``enabled: false`` = full fine-tuning."""

    enabled: bool = False
    r: int = LORA_RANK
    alpha: int = LORA_ALPHA
    dropout: float = LORA_DROPOUT
    target_modules: str | list[str] = LORA_TARGET_REGEX

    def peft_config(self):
        if not self.enabled:
            return None
        try:
            from peft import LoraConfig
        except ImportError as exc:  # pragma: no cover - peft is in the [train] extra
            raise RuntimeError("LoRA needs peft: pip install 'videoseg-r1[train]'") from exc
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


@dataclass
class DataSettings:
    """Which benchmark feeds training (CLI flags override ``benchmark``/``data_root``/``split``)."""

    benchmark: str | None = None
    data_root: str | None = None
    split: str = "train"
    samples: SampleConfig = field(default_factory=SampleConfig)
    workers: int = 1  # processes that build the samples (same samples for any number)
    # benchmark 'synthetic_stream' (no data root): samples rendered on the fly, training.stream.StreamConfig
    # fields (tasks, split, seed, frames, size_wh, samples_per_video, num_videos, jpeg_quality); the
    # sizes and layout come from ``samples`` above
    stream: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainJobConfig:
    """One training run. ``mode`` is 'grpo' or 'sft'; ``trainer`` goes to TRL's config class.

    ``prompts_per_step`` (the paper's batch 16) and ``num_generations`` (group 8) fix the number of
    completions per optimiser step (16 x 8 = 128); ``gradient_accumulation_steps`` is derived from
    them, the per-device batch and the number of processes unless ``trainer`` sets it.
    """

    mode: str = "grpo"
    model: str = DEFAULT_REASONER_ID
    dtype: str = "auto"  # 'auto' -> bfloat16 on CUDA, float32 on CPU
    attn_implementation: str = "sdpa"
    freeze_vision: bool = True
    prompts_per_step: int = GRPO_BATCH_SIZE
    num_generations: int = GRPO_GROUP_SIZE
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    max_minutes: float = 0.0  # stop (saving a checkpoint and the final model) after this long; 0 = no limit
    # fresh run: after a few steps, cut max_steps to what fits in this many minutes of training and
    # re-make the learning-rate schedule for the new total, so it still anneals; 0 = off
    fit_minutes: float = 0.0
    # GRPO rollouts: 'auto' = the decode engine (reasoning/decode.py) when the policy is on CUDA and the
    # engine supports it (not LoRA, ZeRO-3/FSDP or vLLM), else transformers' generate; 'engine' = always
    # the engine (also on the CPU; an error if it cannot run the model); 'generate' = TRL's own path
    rollouts: str = "auto"
    # learning curves on held-out stream samples (training.stream_eval.EvalSettings fields:
    # every_steps, samples, batch_size, max_new_tokens, split, tasks, at_end); {} = none
    eval: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check_rollouts(self.rollouts)


def check_rollouts(value: str) -> str:
    if value not in ROLLOUTS:
        raise ValueError(f"rollouts must be one of {ROLLOUTS}, got {value!r}")
    return value


def load_job_config(path: str | Path | None, **overrides: Any) -> TrainJobConfig:
    """Read a YAML job file (or defaults when ``path`` is None), then apply non-None ``overrides``."""
    cfg = load_config(path, TrainJobConfig) if path is not None else TrainJobConfig()
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("benchmark", "data_root", "split"):
            setattr(cfg.data, key, value)
        elif hasattr(cfg, key):
            setattr(cfg, key, value)
        else:
            raise ValueError(f"unknown override {key!r}")
    if cfg.mode not in ("grpo", "sft"):
        raise ValueError(f"mode must be 'grpo' or 'sft', got {cfg.mode!r}")
    check_rollouts(cfg.rollouts)
    return cfg


def trainer_defaults(cfg: TrainJobConfig, cuda: bool, per_device: int, samples_per_step: int,
                     learning_rate: float) -> dict[str, Any]:
    """The TRL trainer settings GRPO and SFT share (each adds its own, ``cfg.trainer`` overrides
    all); gradient accumulation makes ``samples_per_step`` per optimiser step over all processes.
    ``learning_rate`` is the full-fine-tuning one; a LoRA job gets ``LORA_LR_FACTOR`` times it."""
    out = dict(
        learning_rate=learning_rate * (LORA_LR_FACTOR if cfg.lora.enabled else 1.0),
        weight_decay=GRPO_WEIGHT_DECAY,
        per_device_train_batch_size=per_device,
        bf16=cuda,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,
        save_steps=100,
        save_total_limit=3,
        num_train_epochs=1,
        report_to="none",
        remove_unused_columns=False,
        seed=cfg.data.samples.seed,
    )
    if "gradient_accumulation_steps" not in cfg.trainer:
        out["gradient_accumulation_steps"] = derive_grad_accum(samples_per_step, per_device, world_size())
    return out


def trainer_kwargs(config_cls: type, defaults: dict[str, Any], cfg: TrainJobConfig) -> dict[str, Any]:
    """``defaults`` updated with ``cfg.trainer``; keys ``config_cls`` (GRPOConfig / SFTConfig) does
    not have are a clear error."""
    import dataclasses

    kwargs = {**defaults, **cfg.trainer}
    unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(config_cls)})
    if unknown:
        raise ValueError(f"trainer option(s) {unknown} are not {config_cls.__name__} fields")
    return kwargs


def world_size() -> int:
    """Processes in this run (``accelerate launch`` sets WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def derive_grad_accum(completions_per_step: int, per_device: int, processes: int) -> int:
    """Micro-steps so that per_device x processes x accumulation == completions per step.

    >>> derive_grad_accum(128, 8, 1), derive_grad_accum(128, 8, 8), derive_grad_accum(128, 4, 8)
    (16, 2, 4)
    """
    denom = per_device * processes
    if completions_per_step % denom:
        raise ValueError(
            f"{completions_per_step} completions per step cannot be split over {processes} process(es) x "
            f"{per_device} per device; change prompts_per_step, num_generations or "
            f"trainer.per_device_train_batch_size")
    return max(1, completions_per_step // denom)


def resolve_model_dtype(dtype: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
            "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}[dtype]


def load_policy(cfg: TrainJobConfig):
    """(model, processor) from ``cfg.model`` (hub id or a folder); vision tower frozen if asked.

    The model keeps its ``name_or_path``, which TRL uses to build the frozen reference model for the
    KL term (so a trained folder can itself be the start of another run).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_id = str(cfg.model)
    if (model_id.startswith((".", "/", "~")) or os.path.sep in model_id.strip("/").split("/", 1)[-1]) \
            and not Path(model_id).expanduser().is_dir():
        raise FileNotFoundError(f"model folder not found: {model_id}")
    try:
        processor = AutoProcessor.from_pretrained(model_id, padding_side="left")
        model = AutoModelForImageTextToText.from_pretrained(
            model_id, dtype=resolve_model_dtype(cfg.dtype), attn_implementation=cfg.attn_implementation)
    except OSError as exc:
        raise RuntimeError(
            f"could not load model {model_id!r} ({exc}); offline, pass a local folder with --model "
            "or download it first") from None
    # same arithmetic, one batched SDPA per window length instead of one call per window (training
    # speed: the per-window calls make the small model's vision tower launch-bound on a GPU)
    from videoseg_r1.reasoning.vision_attention import enable_grouped_vision_attention

    enable_grouped_vision_attention(model)
    import torch

    if torch.cuda.is_available():
        # cuDNN's SDPA plans every new shape on the host (~15 ms a call) and training batches change
        # shape at every step; flash / memory-efficient attention compute the same without that cost
        torch.backends.cuda.enable_cudnn_sdp(False)
    if cfg.freeze_vision:
        visual = getattr(getattr(model, "model", model), "visual", None) or getattr(model, "visual", None)
        if visual is not None:
            for p in visual.parameters():
                p.requires_grad_(False)
    return model, processor


def placeholder_token_ids(processor) -> list[int]:
    """Ids of the vision placeholder tokens, which a policy must never generate."""
    tok = getattr(processor, "tokenizer", processor)
    ids = []
    for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"):
        i = tok.convert_tokens_to_ids(t)
        if i is not None and i != tok.unk_token_id:
            ids.append(int(i))
    return ids


def save_for_inference(model, processor, out_dir: str | Path, max_shard_size: str | None = None) -> Path:
    """Write a folder the ``Reasoner`` loads directly: full weights (LoRA merged; in shards of at most
    ``max_shard_size`` when given), processor, config."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unwrapped = model
    if hasattr(unwrapped, "merge_and_unload"):
        unwrapped = unwrapped.merge_and_unload()
    if getattr(unwrapped.generation_config, "suppress_tokens", None) is None:
        unwrapped.generation_config.suppress_tokens = placeholder_token_ids(processor) or None
    unwrapped.save_pretrained(out_dir, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    processor.save_pretrained(out_dir)
    return out_dir
