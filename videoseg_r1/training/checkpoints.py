"""Checkpoints of the TRL trainers that survive a kill (``training.grpo`` and ``training.sft`` use them).

Three things go wrong with a plain ``Trainer`` checkpoint, and this module fixes each:

* **Key names.** ``save_pretrained`` writes the weights under the checkpoint names the installed
  transformers converts from (Qwen2.5-VL: ``visual.*``, ``model.layers.*``), while the model's own
  names are ``model.visual.*``, ``model.language_model.*``. ``Trainer._load_from_checkpoint`` loads
  them with ``load_state_dict(strict=False)`` and only warns, so a resumed run silently goes on from
  its starting weights (transformers #43701). :func:`load_full_weights` maps the names through the
  model's own save-time conversion and refuses a checkpoint that leaves any weight unloaded.
* **Torn checkpoints.** A kill while ``checkpoint-N/`` is being written leaves a folder that looks
  like the newest checkpoint. :class:`ResumableTrainerMixin` writes :data:`MARKER` last, listing
  every file with its size; only a folder whose marker agrees with what is on disk counts.
* **Data order.** TRL's GRPO ``RepeatSampler`` draws each epoch's shuffle from one generator that
  a resumed run restarts, so a run resumed in epoch 2 sees epoch 1's prompts again.
  :class:`EpochSeededSampler` reseeds it from (seed, epoch) through the ``set_epoch`` the trainer
  calls at every epoch (also after a resume).
* **Choosing.** :func:`resolve_resume` (``--resume auto``) takes the newest complete checkpoint, says
  which it took and which it skipped, moves torn ones aside (``incomplete-checkpoint-N``, which no
  later resume or checkpoint rotation looks at) and starts fresh, saying so, when none is complete.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

MARKER = "videoseg_r1_checkpoint.json"  # written last into every checkpoint folder
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TORN_PREFIX = "incomplete-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (torn, or weights that do not fit the model)."""


# ---------------------------------------------------------------- complete checkpoints


def write_marker(folder: str | Path, step: int) -> Path:
    """Record every file of ``folder`` with its size in :data:`MARKER` (written last, atomically)."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.stat().st_size
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"step": int(step), "files": files}, indent=1))
    tmp.replace(folder / MARKER)
    return folder / MARKER


def checkpoint_problem(folder: str | Path) -> str | None:
    """None when ``folder`` is a complete checkpoint, else why not (one line).

    Complete = its marker lists files that are all there with the recorded sizes. A folder written
    before markers existed counts when its ``trainer_state.json`` (the trainer writes it after the
    weights, optimizer, scheduler and RNG states) is present and parses.
    """
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        state = folder / "trainer_state.json"
        if not state.is_file():
            return "no completion marker and no trainer_state.json (killed while it was written?)"
        try:
            json.loads(state.read_text())
        except (OSError, ValueError):
            return "no completion marker and an unreadable trainer_state.json"
        return None
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable {MARKER}"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the marker says {size}"
    return None


def checkpoints_newest_first(output_dir: str | Path) -> list[Path]:
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _set_aside(folder: Path) -> Path:
    target = folder.with_name(TORN_PREFIX + folder.name)
    if target.exists():
        shutil.rmtree(target)
    folder.rename(target)
    return target


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _is_main_process() -> bool:
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # noqa: BLE001 - no accelerate state: a single process
        return True


def resolve_resume(resume: str | bool | None, output_dir: str | Path) -> str | None:
    """The checkpoint folder to resume from, or None to start fresh.

    ``'auto'``/``True``: the newest complete ``checkpoint-N`` in ``output_dir``; newer torn ones are
    reported and moved aside (by the main process). A path: it must be a complete checkpoint.
    """
    if resume in (None, False, "", "none"):
        return None
    main = _is_main_process()
    if resume in (True, "auto", "latest"):
        for folder in checkpoints_newest_first(output_dir):
            problem = checkpoint_problem(folder)
            if problem is None:
                if main:
                    _say(f"resume: from {folder}")
                return str(folder)
            if main:
                moved = _set_aside(folder)
                _say(f"resume: skipped incomplete {folder.name} ({problem}); moved it to {moved.name}")
        if main:
            _say(f"resume: no complete checkpoint in {output_dir}; starting fresh")
        return None
    folder = Path(resume)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint to resume from not found: {resume}")
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise CheckpointError(f"checkpoint {resume} is incomplete ({problem}); pass an earlier one or --resume auto")
    return str(folder)


# ---------------------------------------------------------------- weights under the right names


def _checkpoint_state_dict(folder: Path) -> dict:
    """Every tensor of the checkpoint's full weights (single file or shards), on the CPU."""
    import torch
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single), device="cpu")
    if index.is_file():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(str(folder / shard), device="cpu"))
        return state
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise CheckpointError(f"no model weights (model.safetensors[.index.json]) in checkpoint {folder}")


def saved_names(model) -> dict[str, list[str]]:
    """For each name ``save_pretrained`` writes, the model's own parameter/buffer names it holds.

    Worked out by running the model's save-time conversion (transformers' ``revert_weight_conversion``)
    over its own state dict and following each tensor; tied weights list several names.
    """
    state = model.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # a transformers without conversions saves under the model's own names
        reverted = state
    else:
        reverted = revert_weight_conversion(model, dict(state))
    by_tensor: dict[int, list[str]] = {}
    for name, tensor in state.items():
        by_tensor.setdefault(id(tensor), []).append(name)
    out = {}
    for name, tensor in reverted.items():
        own = by_tensor.get(id(tensor))
        if own is None:
            raise CheckpointError(
                f"cannot map checkpoint weight {name!r} onto {type(model).__name__}: the installed transformers "
                "converts it on save (not a renaming); resume through from_pretrained instead")
        out[name] = own
    return out


def load_full_weights(model, folder: str | Path) -> int:
    """Copy a full checkpoint's weights into ``model`` in place; returns the tensors loaded.

    Names are those ``save_pretrained`` writes (mapped back through :func:`saved_names`) or, for
    checkpoints written under the model's own names, those. Any checkpoint tensor with no place in
    the model, any model tensor left unloaded (tied copies count as loaded together) or a shape
    mismatch is a :class:`CheckpointError`, never a warning.
    """
    import torch

    folder = Path(folder)
    saved = _checkpoint_state_dict(folder)
    own = model.state_dict()
    names = saved_names(model)
    groups = {n: group for group in names.values() for n in group}
    loaded: set[str] = set()
    unexpected, mismatched = [], []
    with torch.no_grad():
        for key, value in saved.items():
            targets = names.get(key) or groups.get(key) or ([key] if key in own else None)
            if targets is None:
                unexpected.append(key)
                continue
            target = own[targets[0]]
            if tuple(target.shape) != tuple(value.shape):
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}")
                continue
            target.copy_(value)
            loaded.update(groups.get(targets[0], targets))
    missing = [n for n in own if n not in loaded]
    if unexpected or missing or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(f"checkpoint {folder} does not fit {type(model).__name__}: " + "; ".join(parts))
    return len(saved)


def check_adapter_loaded(model, folder: str | Path) -> int:
    """After peft loaded ``folder``'s adapter into ``model``: every saved adapter tensor must equal the
    model's (same names as peft saves them, same values); returns the number checked."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"no adapter_model.safetensors in LoRA checkpoint {folder}")
    saved = load_file(str(path), device="cpu")
    current = get_peft_model_state_dict(model)
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    different = [k for k in saved if k in current
                 and not torch.equal(current[k].detach().cpu().to(saved[k].dtype), saved[k])]
    if missing or unexpected or different:
        raise CheckpointError(
            f"LoRA checkpoint {folder} did not load into the model: {len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(different)} not equal after loading (e.g. {(missing + unexpected + different)[:3]})")
    return len(saved)


# ---------------------------------------------------------------- the trainer side


class EpochSeededSampler:
    """Wraps a sampler that shuffles with its own ``generator`` but has no ``set_epoch``: each epoch's
    order then depends on (``seed``, epoch) only, the same in a resumed run as in an uninterrupted one.

    >>> import torch
    >>> class Shuffle:
    ...     def __init__(self): self.generator = torch.Generator()
    ...     def __iter__(self): return iter(torch.randperm(5, generator=self.generator).tolist())
    ...     def __len__(self): return 5
    >>> a, b = EpochSeededSampler(Shuffle(), seed=0), EpochSeededSampler(Shuffle(), seed=0)
    >>> a.set_epoch(0); first = list(a); a.set_epoch(1); second = list(a)
    >>> b.set_epoch(1); list(b) == second != first
    True
    """

    def __init__(self, sampler, seed: int):
        self.sampler, self.seed, self.epoch = sampler, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.sampler.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)



class ResumableTrainerMixin:
    """Put before a transformers/TRL trainer class: a completion marker after every checkpoint, and a
    strict, name-mapped weight load on resume (full weights, and a checked LoRA adapter), and a
    training order that a resume reproduces (:class:`EpochSeededSampler`)."""

    def _get_train_sampler(self, *args, **kwargs):
        sampler = super()._get_train_sampler(*args, **kwargs)
        if getattr(sampler, "generator", None) is not None and not hasattr(sampler, "set_epoch"):
            sampler = EpochSeededSampler(sampler, self.args.seed)
        return sampler

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        self.accelerator.wait_for_everyone()  # every rank's optimizer shard is on disk
        if self.args.should_save and folder.is_dir():
            write_marker(folder, self.state.global_step)
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        inner = self.accelerator.unwrap_model(model if model is not None else self.model)
        if getattr(inner, "peft_config", None):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            n = check_adapter_loaded(inner, resume_from_checkpoint)
        elif self.is_fsdp_enabled:  # FSDP's own state-dict format (model's own names)
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        else:
            n = load_full_weights(inner, resume_from_checkpoint)
        if self.accelerator.is_main_process:
            _say(f"resume: loaded {n} weight tensors from {resume_from_checkpoint}")


def resumable(trainer_cls: type) -> type:
    """``trainer_cls`` with :class:`ResumableTrainerMixin` in front."""
    return type(f"Resumable{trainer_cls.__name__}", (ResumableTrainerMixin, trainer_cls), {})
