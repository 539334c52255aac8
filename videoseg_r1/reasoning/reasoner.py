"""The vision-language model wrapper used by HTFS (``sampler.py``) and the reasoning step (``reason.py``).

``Reasoner`` loads any Qwen2.5-VL / Qwen2-VL / Qwen3-VL checkpoint (hub id or local folder) and
turns *frames + text* into *K generated texts with their sequence log-likelihoods and token
counts*. ``ScriptedReasoner`` is a stand-in with the same ``generate`` interface that returns
given texts (tests, ablations, debugging the sampler without a GPU).

    >>> reasoner = Reasoner.from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct")      # doctest: +SKIP
    >>> out = reasoner.generate("Where is the dog?", frames, timestamps_s=ts,    # doctest: +SKIP
    ...                         frame_keys=indices, num_samples=5, do_sample=True)
    >>> [(s.text, s.logprob, s.num_tokens) for s in out.samples]                 # doctest: +SKIP

How one call runs (``Reasoner.generate``):

1. Frames (RGB uint8 (H, W, 3)) are resized to ``frame_size_hw`` (rounded to the vision
   patch grid) and given to the processor either as ONE video (timestamps listed in the text) or
   as separate images (each preceded by its timestamp).
2. Vision encoding, with a cache: the vision tower's outputs are kept per *visual unit* keyed by
   (kind, frame keys, size). A unit is one image, or, for Qwen2-VL / Qwen2.5-VL videos, one
   temporal patch (2 consecutive frames: these models' vision attention never crosses temporal
   patches, so a patch's features do not depend on the rest of the video); other models cache the
   whole video. Only the units not in the cache are encoded (one batched call); the assembled
   features go to the model as ``mm_encoder_outputs`` (transformers' pre-encoded vision input),
   so identical frames are not re-encoded between HTFS rounds.
3. Prefill ONCE (batch 1) over all prompt tokens but the last, then repeat the KV cache K times
   (``Cache.batch_repeat_interleave``) and call ``generate`` once with
   ``num_return_sequences=K``: the K samples share the prefill; generate only runs the last
   prompt token and the decode steps, batched over K.
4. Log-likelihoods come from the raw logits (``output_logits=True``; temperature, top-p and the
   suppressed placeholder tokens do not change them): ``logprob`` = sum over the generated tokens
   (EOS included, padding after it excluded) of log p(token).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from videoseg_r1.config import ReasonerConfig, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

# Every prompt of ours asks for the answer inside <answer> tags: decoding stops right after it
# (both back-ends, so they never differ in output).
STOP_STRINGS = ("</answer>",)

TEMPLATE_NAMES = ("interval", "position", "reasoning", "difficulty", "grounding", "list")
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
_PAIR_CACHE_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")  # vision attention stays inside a temporal patch
_PLACEHOLDER_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


# ============================================================== templates


def load_template(name: str) -> str:
    """Text of ``reasoning/templates/<name>.txt`` (``TEMPLATE_NAMES``; grounding and list are the
    pretraining prompts of ``training/stream.py``)."""
    if name not in TEMPLATE_NAMES:
        raise ValueError(f"unknown template {name!r}; known: {list(TEMPLATE_NAMES)}")
    return (resources.files("videoseg_r1.reasoning") / "templates" / f"{name}.txt").read_text()


_FIELD_RE = re.compile(r"\{([A-Za-z_]\w*)(?::([^{}]*))?\}")


def render_template(template: str, **values: Any) -> str:
    """Fill ``{name}`` / ``{name:fmt}`` fields whose name is in ``values``; other braces stay.

    (Templates contain literal JSON, so ``str.format`` cannot be used.) ``template`` is a
    template name from ``TEMPLATE_NAMES`` or the template text itself.
    """
    text = load_template(template) if template in TEMPLATE_NAMES else template

    def fill(m: re.Match) -> str:
        name, fmt = m.group(1), m.group(2)
        if name not in values:
            return m.group(0)
        return format(values[name], fmt or "")

    return _FIELD_RE.sub(fill, text).strip()


# ============================================================== outputs


@dataclass
class Sample:
    """One generated sequence. ``logprob`` = sum of log p(token) over ``num_tokens`` tokens.

    ``token_ids`` are the generated ids (EOS included when produced; empty for scripted samples).
    """

    text: str
    logprob: float
    num_tokens: int
    token_ids: list[int] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.num_tokens, 1)


@dataclass
class GenerationTiming:
    """Where the time of one ``generate`` call went (seconds; CUDA synchronised)."""

    preprocess_s: float = 0.0
    vision_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    prompt_tokens: int = 0
    visual_tokens: int = 0
    new_tokens: int = 0  # summed over the K samples
    decode_steps: int = 0
    vision_units_cached: int = 0
    vision_units_computed: int = 0

    @property
    def total_s(self) -> float:
        return self.preprocess_s + self.vision_s + self.prefill_s + self.decode_s

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0


@dataclass
class GenerationOutput:
    """K samples for one prompt, the prompt text and the timing."""

    samples: list[Sample]
    prompt: str
    timing: GenerationTiming = field(default_factory=GenerationTiming)

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.samples]


class ReasonerLoadError(RuntimeError):
    """The model could not be loaded (message names the id and the fix)."""


# ============================================================== the interface


class ReasonerBase:
    """Interface shared by ``Reasoner`` and ``ScriptedReasoner``.

    ``generate(text, frames, ...)``: ``frames`` is a sequence of RGB uint8 arrays (H, W, 3);
    ``as_video`` shows them as one video (``timestamps_s`` listed in the prompt) or as separate
    images; ``frame_keys`` (e.g. frame indices) name the frames for the vision cache (default: a
    hash of the pixels); ``frame_size_hw`` resizes every frame first. Returns ``num_samples``
    samples (sampling requires ``do_sample=True`` when ``num_samples > 1``).
    """

    config: ReasonerConfig

    def generate(self, text: str, frames: Sequence[np.ndarray] = (), *, as_video: bool = True,
                 timestamps_s: Sequence[float] | None = None,
                 frame_keys: Sequence[Hashable] | None = None,
                 frame_size_hw: tuple[int, int] | None = None, num_samples: int = 1,
                 do_sample: bool | None = None, temperature: float | None = None,
                 top_p: float | None = None, max_new_tokens: int | None = None) -> GenerationOutput:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError


def _timestamps_text(timestamps_s: Sequence[float]) -> str:
    return "Frame timestamps (seconds): " + ", ".join(f"{t:.2f}" for t in timestamps_s) + "."


# ============================================================== scripted stand-in


@dataclass
class ScriptedCall:
    """What a ``ScriptedReasoner`` was asked (recorded for tests)."""

    text: str
    num_frames: int
    frame_keys: list | None
    timestamps_s: list | None
    num_samples: int
    as_video: bool
    do_sample: bool | None


class ScriptedReasoner(ReasonerBase):
    """Returns scripted answers through the ``Reasoner`` interface.

    ``script`` is either a list (one entry per ``generate`` call, consumed in order) or a callable
    ``(call: ScriptedCall) -> entry``. An entry is a list of answers; an answer is a string
    (log-likelihood 0.0) or a ``(text, logprob)`` pair. If an entry has fewer answers than
    ``num_samples`` they are cycled; more are truncated. When the list is exhausted ``default`` is
    used (or an error raised when ``default`` is None).
    """

    def __init__(self, script: Sequence[Any] | Callable[[ScriptedCall], Any], default: Any = None,
                 config: ReasonerConfig | None = None, model_type: str = ""):
        self.model_type = model_type  # the model family it stands in for (its coordinate convention)
        self.script = script if callable(script) else list(script)
        self.default = default
        self.config = config or ReasonerConfig(model="scripted")
        self.calls: list[ScriptedCall] = []

    def generate(self, text, frames=(), *, as_video=True, timestamps_s=None, frame_keys=None,
                 frame_size_hw=None, num_samples=1, do_sample=None, temperature=None, top_p=None,
                 max_new_tokens=None) -> GenerationOutput:
        call = ScriptedCall(text, len(frames), list(frame_keys) if frame_keys is not None else None,
                            list(timestamps_s) if timestamps_s is not None else None, num_samples,
                            as_video, do_sample)
        self.calls.append(call)
        if callable(self.script):
            entry = self.script(call)
        elif len(self.calls) <= len(self.script):
            entry = self.script[len(self.calls) - 1]
        elif self.default is not None:
            entry = self.default
        else:
            raise IndexError(f"ScriptedReasoner: no scripted answer for call {len(self.calls)}")
        if isinstance(entry, (str, tuple)):
            entry = [entry]
        answers = [(a, 0.0) if isinstance(a, str) else (str(a[0]), float(a[1])) for a in entry]
        if not answers:
            answers = [("", 0.0)]
        samples = [Sample(t, lp, self.count_tokens(t))
                   for t, lp in (answers[i % len(answers)] for i in range(num_samples))]
        prompt = text if not (as_video and timestamps_s) else _timestamps_text(timestamps_s) + "\n" + text
        return GenerationOutput(samples, prompt, GenerationTiming())

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class AdapterDisabledReasoner(ReasonerBase):
    """A ``Reasoner`` carrying a LoRA adapter, answering as its base model (the adapter off): HTFS's
    frozen stage-1 model on the same weights. Its vision features are cached apart from the
    reasoner's (an adapter may touch the vision tower)."""

    def __init__(self, reasoner: "Reasoner"):
        self.reasoner = reasoner
        self.config = reasoner.config

    def generate(self, text, frames=(), *, frame_keys=None, **kwargs) -> GenerationOutput:
        keys = [("stage1", k) for k in frame_keys] if frame_keys is not None else [("stage1", _frame_hash(f)) for f in frames]
        with self.reasoner.adapter_disabled():
            return self.reasoner.generate(text, frames, frame_keys=keys, **kwargs)

    def count_tokens(self, text: str) -> int:
        return self.reasoner.count_tokens(text)

    def clear_vision_cache(self) -> None:
        self.reasoner.clear_vision_cache()


# ============================================================== the real model


def shown_fps(num_frames: int, timestamps_s: Sequence[float] | None) -> float:
    """Frames per second of the frames shown: (n - 1) / (last - first timestamp); 1.0 without times.

    >>> shown_fps(16, [10 + 0.5 * i for i in range(16)]), shown_fps(3, None), shown_fps(1, [4.0])
    (2.0, 1.0, 1.0)
    """
    ts = [float(t) for t in timestamps_s] if timestamps_s is not None else []
    if num_frames > 1 and len(ts) == num_frames and ts[-1] > ts[0]:
        return (num_frames - 1) / (ts[-1] - ts[0])
    return 1.0


def shown_video_metadata(num_frames: int, timestamps_s: Sequence[float] | None) -> dict[str, Any]:
    """``VideoMetadata`` of the clip the processor gets: exactly the frames shown, at their own rate.

    The processor takes the video clock from this (Qwen2.5-VL: ``second_per_grid_ts =
    temporal_patch_size / sampled_fps``, the temporal position ids; Qwen3-VL: its timestamp text):
    without it transformers falls back to 24 fps whatever the clip. The clip's own time axis starts
    at 0 at its first frame, as the HTFS prompts state (``sampler.clip_time_axis``).
    """
    fps = shown_fps(num_frames, timestamps_s)
    return {"total_num_frames": int(num_frames), "fps": float(fps), "frames_indices": list(range(num_frames)),
            "duration": num_frames / fps}


def _frame_hash(frame: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).hexdigest()


def _resize(frame: np.ndarray, size_hw: tuple[int, int] | None) -> np.ndarray:
    if size_hw is None or tuple(frame.shape[:2]) == tuple(size_hw):
        return np.ascontiguousarray(frame)
    import cv2

    h, w = size_hw
    interp = cv2.INTER_AREA if h * w < frame.shape[0] * frame.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(frame, (w, h), interpolation=interp)


def _adapter_folder(model_id: str) -> tuple[Path, str] | None:
    """(folder, base model) when ``model_id`` is a folder holding an unmerged peft LoRA adapter."""
    folder = Path(model_id)
    config = folder / "adapter_config.json"
    if not config.is_file():
        return None
    import json

    try:
        base = json.loads(config.read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ReasonerLoadError(f"{config} does not name its base model (base_model_name_or_path)") from None
    local = folder / base
    return folder, str(local.resolve()) if not Path(base).is_absolute() and local.exists() else base


def _has_processor(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("processor_config.json", "preprocessor_config.json",
                                                 "tokenizer_config.json"))


def _offline_hint(model_id: str) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    where = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "the hub could not be reached"
    return (f"could not load reasoner {model_id!r}: its weights are not in the local cache and {where}. "
            f"Fix: on a machine with internet run `huggingface-cli download {model_id}` (or "
            f"`python -c \"from huggingface_hub import snapshot_download; snapshot_download('{model_id}')\"`) "
            f"and copy the cache / set HF_HOME, or pass a local folder with the weights "
            f"(e.g. --reasoner /path/to/model).")


class Reasoner(ReasonerBase):
    """A Qwen-VL model + processor with batched sampling, log-likelihoods and a vision cache.

    Build with ``Reasoner.from_pretrained(id_or_path, config)``; ``__init__`` takes an already
    loaded model and processor (e.g. the tiny test model).
    """

    def __init__(self, model, processor, config: ReasonerConfig | None = None):
        import torch

        # an unmerged LoRA (a peft PeftModel): run the wrapped model, whose layers carry the adapter,
        # and keep the wrapper to switch the adapter off for the stage-1 model (adapter_disabled)
        self._peft = model if hasattr(model, "get_base_model") and hasattr(model, "peft_config") else None
        if self._peft is not None:
            model = model.get_base_model()
        self.model = model
        self.processor = processor
        self.config = config or ReasonerConfig(model=getattr(model, "name_or_path", "") or "in-memory")
        self.tokenizer = processor.tokenizer
        self.model_type = getattr(model.config, "model_type", "")
        self.device = next(model.parameters()).device
        self._torch = torch
        self._vision_cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._engine: Any = None  # DecodeEngine, False when unsupported, None before first use
        if getattr(self.config, "grouped_vision_attention", True):
            from videoseg_r1.reasoning.vision_attention import enable_grouped_vision_attention

            enable_grouped_vision_attention(model)
        self.vision_cache_hits = 0
        self.vision_cache_misses = 0
        vp = getattr(processor, "video_processor", None) or processor.image_processor
        self.patch_size = int(getattr(vp, "patch_size", 14))
        self.merge_size = int(getattr(vp, "merge_size", 2))
        self.temporal_patch_size = int(getattr(vp, "temporal_patch_size", 2))
        self.suppress_ids = [i for i in (self.tokenizer.convert_tokens_to_ids(t) for t in _PLACEHOLDER_TOKENS)
                             if isinstance(i, int) and i >= 0 and i != self.tokenizer.unk_token_id]
        eos = model.generation_config.eos_token_id
        self.eos_ids = set([eos] if isinstance(eos, int) else (eos or []))
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end >= 0 and im_end != self.tokenizer.unk_token_id:
            self.eos_ids.add(im_end)
        pad = model.generation_config.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.pad_token_id or min(self.eos_ids))
        if self.model_type and self.model_type not in SUPPORTED_MODEL_TYPES:
            log.warning("reasoner model type %r is not one of %s; prompts and the vision cache may "
                        "not fit it", self.model_type, SUPPORTED_MODEL_TYPES)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, model_id: str | Path | None = None, config: ReasonerConfig | None = None,
                        **overrides: Any) -> "Reasoner":
        """Load model + processor from a hub id or a local folder.

        bfloat16 + SDPA on CUDA, float32 on CPU (``config.dtype='auto'``); ``config.device_map``
        (e.g. "auto") spreads large models over devices; ``trust_remote_code`` stays False unless
        the config says otherwise. Missing weights offline -> ``ReasonerLoadError`` naming the fix.
        """
        import dataclasses

        cfg = dataclasses.replace(config or ReasonerConfig(), **overrides)
        if model_id is not None:
            cfg = dataclasses.replace(cfg, model=str(model_id))
        model_id = cfg.model
        looks_local = model_id.startswith((".", "/", "~")) or os.sep in model_id.strip("/").split("/", 1)[-1]
        if looks_local and not Path(model_id).expanduser().exists():
            raise ReasonerLoadError(f"reasoner folder {model_id!r} does not exist; pass an existing folder "
                                    f"or a hub id such as 'Qwen/Qwen2.5-VL-7B-Instruct'")
        if Path(model_id).expanduser().is_dir():
            model_id = str(Path(model_id).expanduser())
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        from transformers import AutoModelForImageTextToText, AutoProcessor

        adapter = _adapter_folder(model_id)
        try:
            weights = adapter[1] if adapter else model_id
            processor = AutoProcessor.from_pretrained(
                model_id if adapter is None or _has_processor(adapter[0]) else weights,
                trust_remote_code=cfg.trust_remote_code)
            model = AutoModelForImageTextToText.from_pretrained(
                weights, dtype=dtype, attn_implementation=cfg.attn_implementation,
                device_map=cfg.device_map, trust_remote_code=cfg.trust_remote_code)
            if adapter:  # an unmerged LoRA: the base's weights plus the adapter (HTFS runs with it off)
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(adapter[0]))
        except (OSError, ValueError) as exc:  # hub errors (offline, missing entry) are OSError subclasses
            msg = str(exc)
            if Path(model_id).is_dir() or not any(w in msg.lower() for w in (
                    "offline", "cache", "connect", "not found", "does not appear", "couldn't", "could not",
                    "is not a local folder", "hub")):
                raise ReasonerLoadError(f"could not load reasoner {model_id!r}: {msg}") from None
            raise ReasonerLoadError(_offline_hint(model_id)) from None
        if cfg.device_map is None:
            model = model.to(device)
        model.eval()
        return cls(model, processor, cfg)

    # ---------------------------------------------------------------- stage 1 under an adapter
    def adapter_base(self) -> str | None:
        """The base model of the unmerged LoRA adapter this model carries (None without one)."""
        if self._peft is None:
            return None
        return getattr(next(iter(self._peft.peft_config.values())), "base_model_name_or_path", None)

    @contextlib.contextmanager
    def adapter_disabled(self):
        """The base model's answers: the LoRA adapter switched off for the duration (one copy of the
        weights serves HTFS's frozen stage-1 model and the trained reasoner)."""
        if self._peft is None:
            yield
            return
        with self._peft.disable_adapter():
            yield

    # ---------------------------------------------------------------- helpers
    def count_tokens(self, text: str) -> int:
        """Number of tokenizer tokens in ``text`` (no special tokens added)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def clear_vision_cache(self) -> None:
        self._vision_cache.clear()

    @property
    def vision_cache_size(self) -> int:
        return len(self._vision_cache)

    def snap_size(self, size_hw: tuple[int, int]) -> tuple[int, int]:
        """Round (H, W) to the vision grid (multiples of patch * merge, at least one cell)."""
        f = self.patch_size * self.merge_size
        return max(f, round(size_hw[0] / f) * f), max(f, round(size_hw[1] / f) * f)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def _cache_get(self, key):
        if key in self._vision_cache:
            self._vision_cache.move_to_end(key)
            return self._vision_cache[key]
        return None

    def _cache_put(self, key, value) -> None:
        self._vision_cache[key] = value
        self._vision_cache.move_to_end(key)
        limit = int(getattr(self.config, "vision_cache_units", 256))
        while len(self._vision_cache) > max(limit, 0):
            self._vision_cache.popitem(last=False)

    def build_messages(self, text: str, num_frames: int, as_video: bool,
                       timestamps_s: Sequence[float] | None) -> list[dict]:
        """Chat messages: the video (or images, each after its timestamp) then the text."""
        content: list[dict] = []
        if num_frames and as_video:
            content.append({"type": "video"})
            # Qwen3-VL's processor writes its own "<t seconds>" before each temporal patch (from the
            # video metadata): a second timestamp line of ours would repeat them
            if timestamps_s is not None and not str(getattr(self, "model_type", "")).startswith("qwen3_vl"):
                text = _timestamps_text(timestamps_s) + "\n" + text
        elif num_frames:
            for i in range(num_frames):
                if timestamps_s is not None:
                    content.append({"type": "text", "text": f"Frame at {timestamps_s[i]:.2f} s:"})
                content.append({"type": "image"})
        content.append({"type": "text", "text": text})
        return [{"role": "user", "content": content}]

    # ---------------------------------------------------------------- vision
    def _encode_vision(self, inputs: dict, keys: list, as_video: bool, sizes: list[tuple[int, int]],
                       timing: GenerationTiming) -> dict:
        """``mm_encoder_outputs`` for the processed inputs, computing only uncached units.

        Unit keys: ("image", frame key, (H, W)), ("video_patch", (key_a, key_b), (H, W)) or
        ("video", all keys, (H, W)). Cached values are the per-unit merged features
        (tokens, hidden) on the model's device, or the whole encoder output for "video" units.
        """
        size_hw = sizes[0]
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        torch = self._torch
        base = self.model.model
        dtype = base.visual.dtype if hasattr(base, "visual") else None
        if as_video:
            pixels, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
            encode, kind = base.get_video_features, "video"
        else:
            pixels, grid = inputs["pixel_values"], inputs["image_grid_thw"]
            encode, kind = base.get_image_features, "image"
        grid = grid.to(self.device)
        # --- split into units: (key, pixel rows, grid row)
        units = []
        if as_video and self.model_type in _PAIR_CACHE_MODEL_TYPES:
            t, gh, gw = (int(v) for v in grid[0].tolist())
            tp = self.temporal_patch_size
            padded = list(keys) + [keys[-1]] * (t * tp - len(keys))
            for j in range(t):
                rows = slice(j * gh * gw, (j + 1) * gh * gw)
                units.append((("video_patch", tuple(padded[j * tp:(j + 1) * tp]), size_hw), rows,
                              torch.tensor([[1, gh, gw]], device=self.device)))
        elif as_video:
            units.append((("video", tuple(keys), size_hw), slice(0, pixels.shape[0]), grid))
        else:
            start = 0
            for i, row in enumerate(grid):
                n = int(row.prod())
                units.append((("image", keys[i], sizes[i]), slice(start, start + n), row[None]))
                start += n
        missing = [u for u in units if self._cache_get(u[0]) is None]
        timing.vision_units_cached += len(units) - len(missing)
        timing.vision_units_computed += len(missing)
        self.vision_cache_hits += len(units) - len(missing)
        self.vision_cache_misses += len(missing)
        if missing:
            px = torch.cat([pixels[u[1]] for u in missing]).to(self.device, dtype)
            g = torch.cat([u[2] for u in missing])
            with torch.inference_mode():
                out = encode(px, g, return_dict=True)
            if len(units) == 1 and kind == "video" and self.model_type not in _PAIR_CACHE_MODEL_TYPES:
                self._cache_put(missing[0][0], out)  # whole-video unit (e.g. Qwen3-VL deepstack)
            else:
                for u, feats in zip(missing, out.pooler_output):
                    self._cache_put(u[0], feats)
        # --- assemble in prompt order
        if as_video and self.model_type not in _PAIR_CACHE_MODEL_TYPES:
            return {kind: self._cache_get(units[0][0])}
        feats = [self._cache_get(u[0]) for u in units]
        pooled = (torch.cat(feats),) if as_video else tuple(feats)
        timing.visual_tokens = sum(int(f.shape[0]) for f in pooled)
        return {kind: BaseModelOutputWithPooling(pooler_output=pooled)}

    # ---------------------------------------------------------------- generation
    def prepare(self, text: str, frames: Sequence[np.ndarray] = (), *, as_video: bool = True,
                timestamps_s: Sequence[float] | None = None, frame_size_hw: tuple[int, int] | None = None):
        """Processor inputs (batch 1; pixels on the model's GPU when it has one), the prompt text and
        the (H, W) of each frame.

        Frames are resized to ``frame_size_hw`` (or kept at their own size) snapped to the vision
        grid; a video uses the first frame's size for all frames. The processor is told to keep
        those sizes.
        """
        frames = list(frames)
        if frames:
            if frame_size_hw is not None or as_video:
                size = self.snap_size(frame_size_hw or frames[0].shape[:2])
                frames = [_resize(f, size) for f in frames]
            else:
                frames = [_resize(f, self.snap_size(f.shape[:2])) for f in frames]
        sizes = [tuple(int(v) for v in f.shape[:2]) for f in frames]
        messages = self.build_messages(text, len(frames), as_video, timestamps_s)
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
        if frames:
            areas = [h * w for h, w in sizes]
            pixels = {"shortest_edge": min(areas), "longest_edge": max(areas)}
            if as_video:
                kwargs["videos"] = [np.stack(frames)]
                kwargs["videos_kwargs"] = {"size": pixels, "do_sample_frames": False, "cap_pixels_per_frame": False,
                                           "video_metadata": [shown_video_metadata(len(frames), timestamps_s)]}
            else:
                kwargs["images"] = frames
                kwargs["images_kwargs"] = {"size": pixels}
            if self.device.type == "cuda":  # normalise and patchify on the GPU, not on the host
                kwargs["videos_kwargs" if as_video else "images_kwargs"]["device"] = str(self.device)
        inputs = self.processor(**kwargs)
        return inputs, prompt, sizes

    def generate(self, text, frames=(), *, as_video=True, timestamps_s=None, frame_keys=None,
                 frame_size_hw=None, num_samples=1, do_sample=None, temperature=None, top_p=None,
                 max_new_tokens=None) -> GenerationOutput:
        cfg = self.config
        do_sample = cfg.do_sample if do_sample is None else do_sample
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if num_samples > 1 and not do_sample:
            raise ValueError("num_samples > 1 needs do_sample=True (greedy decoding gives K identical answers)")
        if timestamps_s is not None and len(timestamps_s) != len(frames):
            raise ValueError(f"{len(timestamps_s)} timestamps for {len(frames)} frames")
        if frame_keys is not None and len(frame_keys) != len(frames):
            raise ValueError(f"{len(frame_keys)} frame keys for {len(frames)} frames")
        timing = GenerationTiming()
        t0 = time.perf_counter()
        inputs, prompt, sizes = self.prepare(text, frames, as_video=as_video, timestamps_s=timestamps_s,
                                             frame_size_hw=frame_size_hw)
        input_ids = inputs["input_ids"].to(self.device)
        length = input_ids.shape[1]
        timing.prompt_tokens = length
        fwd: dict[str, Any] = {}
        for name in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids"):
            if inputs.get(name) is not None:
                fwd[name] = inputs[name].to(self.device)
        timing.preprocess_s = time.perf_counter() - t0
        if len(frames):
            t0 = time.perf_counter()
            keys = list(frame_keys) if frame_keys is not None else [_frame_hash(f) for f in frames]
            fwd["mm_encoder_outputs"] = self._encode_vision(inputs, keys, as_video, sizes, timing)
            self._sync()
            timing.vision_s = time.perf_counter() - t0
        new_tokens = max_new_tokens or cfg.max_new_tokens
        if do_sample:
            temperature = temperature if temperature is not None else cfg.temperature
            top_p = top_p if top_p is not None else cfg.top_p
        engine = self._decode_engine()
        if engine is not None:
            samples = self._generate_engine(engine, input_ids, fwd, num_samples, new_tokens, do_sample,
                                            temperature, top_p, timing)
        else:
            samples = self._generate_hf(input_ids, fwd, num_samples, new_tokens, do_sample, temperature,
                                        top_p, timing)
        timing.new_tokens = sum(s.num_tokens for s in samples)
        return GenerationOutput(samples, prompt, timing)

    # ---------------------------------------------------------------- decoding back-ends
    def _decode_engine(self):
        """The fast decode engine (``reasoning/decode.py``) when the config selects it: "auto" uses it
        on CUDA for supported models, "static" always (eager on the CPU), "generate" never."""
        mode = getattr(self.config, "decode_engine", "auto")
        if mode not in ("auto", "static", "generate"):
            raise ValueError(f"ReasonerConfig.decode_engine must be 'auto', 'static' or 'generate', got {mode!r}")
        if mode == "generate" or (mode == "auto" and self.device.type != "cuda"):
            return None
        if self.adapter_base() is not None:  # unmerged LoRA layers: the engine reads the plain weights
            return None
        if self._engine is None:
            from videoseg_r1.reasoning.decode import DecodeEngine, UnsupportedModelError

            try:
                self._engine = DecodeEngine(self.model)
            except UnsupportedModelError as exc:
                if mode == "static":
                    raise
                log.warning("decode engine unavailable (%s); using transformers generate", exc)
                self._engine = False
        return self._engine or None

    def _generate_engine(self, engine, input_ids, fwd, num_samples, new_tokens, do_sample, temperature,
                         top_p, timing) -> list[Sample]:
        res = engine.generate(
            input_ids, self._torch.ones_like(input_ids), num_samples=num_samples, max_new_tokens=new_tokens,
            do_sample=do_sample, temperature=temperature if do_sample else 1.0,
            top_p=top_p if do_sample else 1.0, eos_token_id=sorted(self.eos_ids),
            stop_strings=STOP_STRINGS, tokenizer=self.tokenizer, suppress_token_ids=self.suppress_ids, **fwd)
        timing.prefill_s = res.prefill_s
        timing.decode_s = res.decode_s
        timing.decode_steps = res.decode_steps
        samples = []
        for r in range(len(res.token_ids)):
            ids = list(res.token_ids[r])
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            lp = float(res.log_likelihoods[r])
            samples.append(Sample(text=text, logprob=lp if math.isfinite(lp) else -math.inf,
                                  num_tokens=int(res.num_tokens[r]), token_ids=ids))
        return samples

    def _generate_hf(self, input_ids, fwd, num_samples, new_tokens, do_sample, temperature, top_p,
                     timing) -> list[Sample]:
        """transformers ``generate`` after one shared prefill (batch 1) over all prompt tokens but
        the last, the KV cache repeated K times: one batched call for the K samples."""
        torch = self._torch
        length = input_ids.shape[1]
        t0 = time.perf_counter()
        fwd = dict(fwd)
        if "mm_token_type_ids" in fwd:
            fwd["mm_token_type_ids"] = fwd["mm_token_type_ids"][:, :-1]
        with torch.inference_mode():
            if hasattr(self.model, "model") and hasattr(self.model.model, "rope_deltas"):
                self.model.model.rope_deltas = None  # never reuse the previous prompt's deltas
            out = self.model(input_ids=input_ids[:, :-1], use_cache=True, logits_to_keep=1, **fwd)
            cache = out.cache
            if num_samples > 1:
                cache.batch_repeat_interleave(num_samples)
        self._sync()
        timing.prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=new_tokens, do_sample=do_sample,
            num_return_sequences=num_samples, output_logits=True, return_dict_in_generate=True,
            suppress_tokens=self.suppress_ids or None, pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None, stop_strings=list(STOP_STRINGS), tokenizer=self.tokenizer,
        )
        if do_sample:
            gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=None)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            gen = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      cache=cache, **gen_kwargs)
        self._sync()
        timing.decode_s = time.perf_counter() - t0
        timing.decode_steps = len(gen.logits)
        return self._samples(gen.sequences[:, length:], gen.logits)

    def _stop_string_end(self, ids: list[int]) -> int:
        """Length of the shortest prefix of ``ids`` whose text contains a stop string (all if none).
        Containment grows with the prefix, so a binary search finds it."""
        decode = lambda n: self.tokenizer.decode(ids[:n], skip_special_tokens=False)  # noqa: E731
        if not any(s in decode(len(ids)) for s in STOP_STRINGS):
            return len(ids)
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in decode(mid) for s in STOP_STRINGS):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _samples(self, tokens, logits) -> list[Sample]:
        """Texts, summed raw-logit log-probabilities and token counts (through the first EOS)."""
        torch = self._torch
        k, n = tokens.shape
        logp = torch.zeros(k, n, dtype=torch.float32, device=tokens.device)
        for t, step in enumerate(logits[:n]):
            lsm = torch.log_softmax(step.float(), dim=-1)
            logp[:, t] = lsm.gather(-1, tokens[:, t:t + 1].to(lsm.device)).squeeze(-1).to(logp.device)
        is_eos = torch.zeros_like(tokens, dtype=torch.bool)
        for e in self.eos_ids:
            is_eos |= tokens == e
        # tokens after the first EOS are padding
        after = torch.cumsum(is_eos.int(), dim=1) - is_eos.int() > 0
        valid = ~after
        samples = []
        for i in range(k):
            count = int(valid[i].sum())
            ids = tokens[i, :count].tolist()
            count = self._stop_string_end(ids)  # generate pads a row after its stop string
            ids = ids[:count]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            lp = float(logp[i, :count].sum())
            samples.append(Sample(text=text, logprob=lp if math.isfinite(lp) else -math.inf,
                                  num_tokens=count, token_ids=ids))
        return samples
