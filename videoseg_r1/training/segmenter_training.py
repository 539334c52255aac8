"""Training of the small SAM2 (transformers' ``Sam2Model`` with a reduced config) on synthetic frames.

Part of issue 8 (we ship small models we train ourselves, since no weights can be downloaded here).
The SAM2 learns to turn the reasoner's prompt (box + positive point + negative point, SPEC §1 stage 3)
into a mask. Data are generated on the fly by :func:`videoseg_r1.data.synthetic.generate_video`
(``train`` split, seeded by the global sample index, so a resumed run sees the same stream); prompts
are sampled as the reasoner gives them: the tight box of the visible mask with jitter, a positive
point at the distance-transform centre with jitter (kept inside the mask), a negative point just
outside the mask; with small probabilities a point is dropped (label -1, SAM's "not a point") so the
box-only / box + positive-point ablations stay in distribution.

Loss (SAM/SAM2 recipe): the decoder's 3 multimask candidates are upsampled to the input size; per
candidate 20 x focal + dice against the ground truth; the candidate with the lowest loss is trained;
plus MSE between every candidate's predicted IoU and its actual IoU. AdamW, linear warm-up + cosine
decay, bf16 autocast on CUDA, gradient clipping. Validation mIoU on the ``valid`` split with fixed,
un-jittered prompts, keeping the candidate with the highest predicted IoU (as inference does).

The model starts as the reference SAM2 does, not as a fresh transformers ``Sam2Model`` (tied
positional encodings, torch's default init: :func:`init_sam2_for_training`). Even so, training
first learns to segment every shape in the frame (dice ~0.7) and only then to follow the prompt.
Batch size decides how fast it gets past that: H100, 128 px, 4e-4, the valid mIoU after 600
steps was 0.70 with batch 32 and 0.67 after 1000 with batch 16; with batch 8 it was still 0.25
after 1000 steps. Use 32 or more.

Everything lands under ``out``: ``checkpoints/step-XXXXXXX.pt`` (model, optimiser, step; the last two
kept), ``train_log.json`` (loss terms every ``log_every`` steps, validation mIoU every ``eval_every``),
``final/`` (``Sam2Model.from_pretrained`` + ``Sam2Processor.from_pretrained`` folder, safetensors,
bf16 by default) and ``final/training.json``. Run it with ``scripts/train_small_sam2.py`` (see there).
The checkpoint / log helpers here are shared with :mod:`videoseg_r1.training.xmem_training`.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CKPT_RE = re.compile(r"^step-(\d+)\.pt$")


# ============================================================================ shared helpers


def log(tag: str, msg: str) -> None:
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lr_at(step: int, total: int, lr: float, warmup: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` x lr at ``total``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def latest_checkpoint(out: Path) -> Path | None:
    folder = Path(out) / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


def resolve_resume(out: Path, resume: str | None) -> Path | None:
    """``auto``: the latest checkpoint under ``out`` (None when there is none); ``none``/empty: start
    fresh; otherwise a checkpoint file path."""
    if not resume or resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(out)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint file")
    return path


def save_checkpoint(out: Path, step: int, payload: dict, keep: int = 2) -> Path:
    """Atomically write ``out/checkpoints/step-XXXXXXX.pt`` and keep only the ``keep`` newest."""
    import torch

    folder = Path(out) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    tmp = folder / f".{path.name}.tmp{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name)))
    for _, old in found[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def run_training(*, model, cfg, out: Path, device: str, say: Callable[[str], None], state: dict | None,
                 model_config: dict, dataset, loss_fn: Callable, eval_fn: Callable[[], float], eval_key: str,
                 save_final: Callable[[dict], Path], ckpt_path: Path | None = None) -> dict:
    """The loop both small-segmenter trainers share: AdamW (no weight decay on 1-D parameters),
    warm-up + cosine learning rate, gradient clipping, a log row every ``log_every`` steps, validation
    (``eval_fn`` -> one number stored as ``eval_key``) every ``eval_every``, checkpoints every
    ``save_every`` and when ``max_minutes`` runs out (run again to continue), ``final/`` via
    ``save_final(info)`` once ``steps`` are done. With ``fit_minutes`` (fresh runs only) the step
    count is cut, after timing ``FIT_PROBE_STEPS`` steps, to what fits in that many minutes, so the
    learning-rate schedule still anneals and ``final/`` is written inside one time-limited call.
    ``loss_fn(batch, step) -> (loss, {term: value})``.
    Returns the summary (also ``out/summary.json``)."""
    import torch

    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    step, history = 0, {"train": [], "valid": []}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history = int(state["step"]), state["history"]
        say(f"resumed from {ckpt_path} at step {step}")
    n_params = count_parameters(model)
    t_start, acc, n_acc, stopped_early = time.perf_counter(), {}, 0, False
    fit = cfg.fit_minutes > 0 and state is None
    t_probe = None

    def checkpoint():
        save_checkpoint(out, step, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                                    "history": history, "model_config": model_config}, cfg.keep_checkpoints)
        write_json(out / "train_log.json", history)

    if step < cfg.steps:
        for batch in make_loader(dataset, cfg.batch_size, step, cfg.steps - step, cfg.workers):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
            loss, terms = loss_fn(batch, step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step}: {terms}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            if fit and step == FIT_WARMUP_STEPS:
                t_probe = time.perf_counter()
            elif fit and step == FIT_WARMUP_STEPS + FIT_PROBE_STEPS:
                per_step = (time.perf_counter() - t_probe) / FIT_PROBE_STEPS
                left = cfg.fit_minutes * 60 * FIT_MARGIN - (time.perf_counter() - t_start)
                # n more steps cost n * per_step plus n / eval_every validations of FIT_EVAL_STEPS steps each
                more = int(left / per_step / (1 + FIT_EVAL_STEPS / cfg.eval_every))
                fitted = max(step + 1, min(cfg.steps, step + more))
                if fitted < cfg.steps:
                    say(f"--fit-minutes {cfg.fit_minutes:g}: {per_step * 1000:.0f} ms/step, "
                        f"{cfg.steps} steps cut to {fitted}")
                    cfg.steps = fitted
            for k, v in terms.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            n_acc += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {"step": step, "lr": opt.param_groups[0]["lr"], **{k: v / n_acc for k, v in acc.items()},
                       "elapsed_s": round(time.perf_counter() - t_start, 2)}
                history["train"].append(row)
                say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                acc, n_acc = {}, 0
            if step % cfg.eval_every == 0 or step == cfg.steps:
                value = eval_fn()
                history["valid"].append({"step": step, eval_key: value})
                say(f"step {step}: valid {eval_key} {value:.4f}")
            if step % cfg.save_every == 0 or step == cfg.steps:
                checkpoint()
            if cfg.max_minutes and time.perf_counter() - t_start > cfg.max_minutes * 60 and step < cfg.steps:
                checkpoint()
                stopped_early = True
                say(f"time limit reached at step {step}; run the same command again to continue")
                break
            if step >= cfg.steps:  # --fit-minutes cut the run short of the loader's batches
                break
    write_json(out / "train_log.json", history)
    summary = {"step": step, "steps": cfg.steps, "parameters": n_params, "done": step >= cfg.steps,
               f"final_valid_{eval_key.lower()}": history["valid"][-1][eval_key] if history["valid"] else None,
               "last_train": history["train"][-1] if history["train"] else None,
               "seconds_this_call": round(time.perf_counter() - t_start, 1), "device": device}
    if step >= cfg.steps and not stopped_early:
        final = save_final({**summary, "config": asdict(cfg), "history": history})
        summary["final"] = str(final)
        say(f"final model written to {final}")
    write_json(out / "summary.json", summary)
    return summary


FIT_WARMUP_STEPS = 10  # --fit-minutes: steps before timing starts (compilation, loader start-up)
FIT_PROBE_STEPS = 30  # steps timed
FIT_MARGIN = 0.92  # fraction of the minutes planned for training steps (the rest: saving, slack)
FIT_EVAL_STEPS = 5  # each validation is budgeted as this many training steps


def start_run(cfg, tag: str, progress: Callable[[str], None] | None):
    """What every small-segmenter run begins with: the logger, the output folder, the device, the
    synthetic frame size and the checkpoint to resume (None for a fresh start).
    Returns (say, out, device, size_wh, ckpt_path, state)."""
    say = progress or (lambda m: log(tag, m))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = resolve_resume(out, cfg.resume)
    return (say, out, resolve_training_device(cfg.device), parse_size(cfg.data_size), ckpt_path,
            load_training_state(ckpt_path))


def load_training_state(path: Path | None):
    """A checkpoint of ours (tensors, numbers, strings, lists, dicts): loaded with weights_only=True."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True) if path else None


def add_training_arguments(p, d, batch_help: str | None = None) -> None:
    """Command-line options both small-segmenter scripts share; ``d`` is the script's default
    training config (its values are the option defaults)."""
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, final/)")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimiser steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=batch_help)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--seed", type=int, default=d.seed, help="model initialisation and data seed")
    p.add_argument("--resume", default="auto", help="auto (latest checkpoint under --out), none, or a checkpoint path")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-bf16", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--workers", type=int, default=d.workers, help="data loader processes (0: in process)")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--save-dtype", default=d.save_dtype, choices=["bf16", "fp16", "fp32"])
    p.add_argument("--max-minutes", type=float, default=0.0, help="checkpoint and stop after this long (0: no limit)")
    p.add_argument("--fit-minutes", type=float, default=0.0,
                   help="fresh run: cut --steps to what fits in this many minutes (timed on the first steps), "
                        "so the schedule anneals and final/ is written (0: off)")


def training_kwargs(args) -> dict:
    """The shared options of :func:`add_training_arguments` as training-config keyword arguments."""
    return dict(out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                weight_decay=args.weight_decay, warmup=args.warmup, seed=args.seed, resume=args.resume,
                device=args.device, bf16=not args.no_bf16, workers=args.workers, log_every=args.log_every,
                eval_every=args.eval_every, save_every=args.save_every, save_dtype=args.save_dtype,
                max_minutes=args.max_minutes, fit_minutes=args.fit_minutes)


def write_json(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def resolve_training_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def autocast(device: str, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op context on the CPU."""
    import contextlib

    import torch

    if enabled and device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H)."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be WxH, got {text!r}") from None
    return w, h


def make_loader(dataset, batch_size: int, start_batch: int, num_batches: int, workers: int):
    """Batches ``start_batch .. start_batch + num_batches - 1`` of a map-style dataset whose item ``i``
    is deterministic in ``i`` (so a resumed run continues the same stream)."""
    import torch

    batches = [list(range(b * batch_size, (b + 1) * batch_size)) for b in range(start_batch, start_batch + num_batches)]
    kwargs = dict(batch_sampler=batches, num_workers=workers)
    if workers > 0:
        kwargs.update(persistent_workers=False, prefetch_factor=4)
    return torch.utils.data.DataLoader(dataset, **kwargs)


def visible_objects(label_map: np.ndarray, min_area: int) -> list[int]:
    ids, counts = np.unique(label_map, return_counts=True)
    return [int(i) for i, c in zip(ids, counts) if i != 0 and c >= min_area]


# ============================================================================ prompts


def sample_prompt(mask: np.ndarray, rng: np.random.Generator | None, box_jitter: float = 0.1,
                  point_jitter: float = 0.2, neg_ring: float = 0.15) -> dict:
    """A reasoner-like prompt for one (H, W) bool mask, in pixel coordinates of the mask.

    box: tight bounds, each side moved by up to ``box_jitter`` x the box side (normal, sigma
    box_jitter/2), clipped to the frame; point: the distance-transform centre (the GT convention of
    SPEC §2), moved by up to ``point_jitter`` x the distance to the border and kept inside the mask;
    neg_point: a pixel outside the mask at distance 1 .. max(2, neg_ring x sqrt(area)) from it.
    ``rng=None`` gives the deterministic validation prompt (no jitter, the nearest ring pixel to the
    box's top-left corner direction)."""
    import cv2

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())
    if rng is not None and box_jitter > 0:
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        d = rng.normal(0, box_jitter / 2, 4).clip(-box_jitter, box_jitter) * np.array([bw, bh, bw, bh])
        x1, y1, x2, y2 = x1 + d[0], y1 + d[1], x2 + d[2], y2 + d[3]
        x1, x2 = sorted((float(np.clip(x1, 0, w - 1)), float(np.clip(x2, 0, w - 1))))
        y1, y2 = sorted((float(np.clip(y1, 0, h - 1)), float(np.clip(y2, 0, h - 1))))
    dist_in = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    cy, cx = np.unravel_index(int(np.argmax(dist_in)), dist_in.shape)
    px, py = float(cx), float(cy)
    if rng is not None and point_jitter > 0:
        r = float(dist_in[cy, cx]) * point_jitter
        for _ in range(8):
            qx, qy = cx + rng.uniform(-r, r), cy + rng.uniform(-r, r)
            ix, iy = int(round(qx)), int(round(qy))
            if 0 <= ix < w and 0 <= iy < h and mask[iy, ix]:
                px, py = qx, qy
                break
    dist_out = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    ring = max(2.0, neg_ring * math.sqrt(len(xs)))
    oy, ox = np.nonzero((dist_out > 0) & (dist_out <= ring))
    if len(ox) == 0:  # the mask fills the frame
        nx, ny = None, None
    elif rng is None:
        i = int(np.argmin((ox - xs.min()) ** 2 + (oy - ys.min()) ** 2))
        nx, ny = float(ox[i]), float(oy[i])
    else:
        i = int(rng.integers(len(ox)))
        nx, ny = float(ox[i]), float(oy[i])
    return {"box": (x1, y1, x2, y2), "point": (px, py), "neg_point": None if nx is None else (nx, ny)}


# ============================================================================ model


@dataclass
class SmallSam2Config:
    """Architecture of the small SAM2 (a reduced ``Sam2Config``). Defaults: ~3.27 M parameters
    (~6.5 MB in bf16), 256 px input."""

    image_size: int = 256
    hiera_hidden: int = 32
    hiera_dims: tuple = (32, 64, 128, 256)
    hiera_blocks: tuple = (1, 2, 4, 2)
    hiera_heads: tuple = (1, 2, 4, 8)
    hiera_windows: tuple = (8, 4, 8, 8)
    global_blocks: tuple = (4, 6)  # inside stage 3, never a stage's first block
    hidden: int = 128  # FPN / prompt encoder / mask decoder width
    decoder_mlp: int = 512
    decoder_heads: int = 4
    iou_hidden: int = 128

    def sam2_config(self):
        from transformers import Sam2Config

        s = self.image_size // 4
        nb = sum(self.hiera_blocks)
        backbone = dict(model_type="sam2_hiera_det_model", hidden_size=self.hiera_hidden,
                        num_attention_heads=self.hiera_heads[0], image_size=[self.image_size, self.image_size],
                        blocks_per_stage=list(self.hiera_blocks), embed_dim_per_stage=list(self.hiera_dims),
                        num_attention_heads_per_stage=list(self.hiera_heads),
                        window_size_per_stage=list(self.hiera_windows),
                        global_attention_blocks=[b for b in self.global_blocks if b < nb] or [nb - 1],
                        window_positional_embedding_background_size=[max(2, self.image_size // 128)] * 2)
        vision = dict(backbone_config=backbone, backbone_channel_list=list(reversed(self.hiera_dims)),
                      backbone_feature_sizes=[[s, s], [s // 2, s // 2], [s // 4, s // 4]], fpn_hidden_size=self.hidden)
        prompt = dict(hidden_size=self.hidden, image_size=self.image_size, patch_size=16)
        decoder = dict(hidden_size=self.hidden, mlp_dim=self.decoder_mlp, num_attention_heads=self.decoder_heads,
                       iou_head_hidden_dim=self.iou_hidden)
        return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)

    @classmethod
    def from_dict(cls, d: dict) -> "SmallSam2Config":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def build_small_sam2(config: SmallSam2Config, seed: int = 0):
    """(Sam2Model in train mode, Sam2Processor) with random weights, initialised as the reference
    SAM2 (facebookresearch/sam2) is, not as transformers does; see :func:`init_sam2_for_training`."""
    import torch
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor

    torch.manual_seed(seed)
    model = Sam2Model(config.sam2_config())
    init_sam2_for_training(model)
    s = config.image_size
    processor = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": s, "width": s},
                                                                 mask_size={"height": s // 4, "width": s // 4}))
    return model, processor


def init_sam2_for_training(model) -> None:
    """Make a fresh transformers ``Sam2Model`` trainable from scratch (in place, from torch's RNG).

    transformers only ever loads SAM2 checkpoints, so two things of its fresh model differ from the
    reference implementation, and with them training never uses the prompt (it settles on "segment
    every shape in the frame", dice ~0.7, IoU ~0.05, whatever the box says):

    * Positional encodings. SAM encodes prompt coordinates and image positions with ONE random
      Fourier matrix (``PromptEncoder.pe_layer``): the decoder finds the prompted place by matching
      the two encodings. ``Sam2Model`` keeps two buffers, ``shared_image_embedding`` and
      ``prompt_encoder.shared_embedding``, not tied (``SamModel`` ties them) and drawn independently;
      converted checkpoints carry equal copies, a fresh model does not. We copy one into the other;
      both are saved with the model (checkpoints, ``save_pretrained``), so the copy persists.
    * Initialisation. ``_init_weights`` draws every Linear / Conv weight and every ``nn.Embedding``
      from N(0, 0.02). The reference SAM2 has no custom init: torch's defaults (Kaiming-uniform
      Linear / Conv, N(0, 1) embeddings). At 0.02 the prompt-type embeddings (positive / negative
      point, box corners; norm ~0.2) vanish beside the Fourier encoding they are added to (norm
      ~sqrt(hidden / 2)), so the decoder cannot tell a box corner from a negative click, and the
      output tokens and mask logits start ~1e-3. We restore torch's defaults.
    """
    import torch
    from torch import nn

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                module.reset_parameters()
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight)
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ============================================================================ data


class Sam2SyntheticDataset:
    """Map-style dataset: item ``i`` -> one (frame, object, prompt) from synthetic video ``i //
    per_video`` of ``split``, deterministic in (seed, i). Tensors at the model's input size:
    image (3, S, S) normalised, mask (S, S) float, points (2, 2) model pixels, labels (2,) with 1 / 0
    (-1 = dropped), box (4,)."""

    def __init__(self, seed: int, image_size: int, size_wh: tuple[int, int] = (320, 240), video_frames: int = 8,
                 per_video: int = 4, split: str = "train", min_area: int = 24, jitter: bool = True,
                 drop_pos: float = 0.05, drop_neg: float = 0.15):
        self.seed, self.image_size, self.size_wh = seed, image_size, tuple(size_wh)
        self.video_frames, self.per_video, self.split, self.min_area = video_frames, per_video, split, min_area
        self.jitter, self.drop_pos, self.drop_neg = jitter, drop_pos, drop_neg
        self._cache: tuple[int, Any] | None = None

    def __len__(self) -> int:  # effectively endless; the sampler decides
        return 1 << 40

    def _video(self, index: int):
        from videoseg_r1.data.synthetic import generate_video

        if self._cache is None or self._cache[0] != index:
            self._cache = (index, generate_video(self.seed, self.split, index, frames=self.video_frames,
                                                 size=self.size_wh))
        return self._cache[1]

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """(frame (H, W, 3) uint8, mask (H, W) bool, prompt in frame pixels)."""
        rng = np.random.default_rng([self.seed, 7, int(i)])
        vid = i // self.per_video
        for attempt in range(20):
            video = self._video(vid + attempt * 1_000_003)
            for _ in range(4):
                t = int(rng.integers(video.num_frames))
                ids = visible_objects(video.label_maps[t], self.min_area)
                if ids:
                    obj = ids[int(rng.integers(len(ids)))]
                    mask = video.label_maps[t] == obj
                    frame = video.frames[t]
                    if self.jitter and rng.random() < 0.5:  # horizontal flip
                        frame, mask = frame[:, ::-1], mask[:, ::-1]
                    prompt = sample_prompt(mask, rng if self.jitter else None)
                    if self.jitter:
                        if rng.random() < self.drop_pos:
                            prompt["point"] = None
                        if rng.random() < self.drop_neg:
                            prompt["neg_point"] = None
                    return np.ascontiguousarray(frame), np.ascontiguousarray(mask), prompt
        raise RuntimeError(f"no visible object found for sample {i}")

    def __getitem__(self, i: int) -> dict:
        frame, mask, prompt = self.raw(i)
        return to_model_inputs(frame, mask, prompt, self.image_size)


def to_model_inputs(frame: np.ndarray, mask: np.ndarray, prompt: dict, image_size: int) -> dict:
    """Resize to the model's square input (as ``Sam2Processor`` does) and scale the prompt coordinates
    the same way (``Sam2Processor._normalize_coordinates``)."""
    import torch
    import torch.nn.functional as F

    h, w = mask.shape
    sx, sy = image_size / w, image_size / h
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)[0]
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    m = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(image_size, image_size), mode="bilinear",
                      align_corners=False)[0, 0]
    points, labels = [], []
    for key, label in (("point", 1), ("neg_point", 0)):
        if prompt.get(key) is None:
            points.append((0.0, 0.0))
            labels.append(-1)
        else:
            points.append((prompt[key][0] * sx, prompt[key][1] * sy))
            labels.append(label)
    x1, y1, x2, y2 = prompt["box"]
    return {"image": x, "mask": (m >= 0.5).float(), "points": torch.tensor(points, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "box": torch.tensor([x1 * sx, y1 * sy, x2 * sx, y2 * sy], dtype=torch.float32)}


# ============================================================================ loss


def focal_loss(logits, target, alpha: float = 0.25, gamma: float = 2.0):
    """Sigmoid focal loss averaged over pixels; logits/target (..., H, W) -> (...)."""
    import torch.nn.functional as F

    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits, target, eps: float = 1.0):
    p = logits.sigmoid().flatten(-2)
    t = target.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)


def sam2_loss(pred_masks, iou_pred, target, focal_weight: float = 20.0, dice_weight: float = 1.0,
              iou_weight: float = 1.0) -> tuple[Any, dict]:
    """pred_masks (B, M, h, w) logits, iou_pred (B, M), target (B, H, W) in {0, 1}.

    Candidates are upsampled to (H, W); per candidate focal x 20 + dice; the lowest one is trained
    (SAM's multimask rule); the IoU head regresses every candidate's actual IoU (MSE)."""
    import torch
    import torch.nn.functional as F

    logits = F.interpolate(pred_masks.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    t = target[:, None].expand_as(logits)
    focal, dice = focal_loss(logits, t), dice_loss(logits, t)
    per_mask = focal_weight * focal + dice_weight * dice  # (B, M)
    best = per_mask.argmin(1)
    idx = torch.arange(len(best), device=best.device)
    with torch.no_grad():
        hard = (logits > 0).float()
        inter = (hard * t).flatten(-2).sum(-1)
        union = (hard + t).clamp(max=1).flatten(-2).sum(-1)
        actual_iou = inter / union.clamp(min=1)
    iou = F.mse_loss(iou_pred.float(), actual_iou)
    loss = per_mask[idx, best].mean() + iou_weight * iou
    terms = {"loss": loss.detach(), "focal": focal[idx, best].mean().detach(), "dice": dice[idx, best].mean().detach(),
             "iou_mse": iou.detach(), "train_iou": actual_iou[idx, best].mean().detach()}
    return loss, terms


def sam2_forward(model, batch: dict, device: str):
    """One forward pass of a batch from :class:`Sam2SyntheticDataset` -> (pred_masks (B, 3, h, w),
    iou_scores (B, 3))."""
    out = model(pixel_values=batch["image"].to(device), input_points=batch["points"][:, None].to(device),
                input_labels=batch["labels"][:, None].to(device), input_boxes=batch["box"][:, None].to(device),
                multimask_output=True)
    return out.pred_masks[:, 0], out.iou_scores[:, 0]


# ============================================================================ validation


def build_sam2_validation(seed: int, image_size: int, num: int, size_wh: tuple[int, int], video_frames: int) -> list:
    """Fixed validation samples from the ``valid`` split: un-jittered prompts, frame-resolution masks."""
    ds = Sam2SyntheticDataset(seed, image_size, size_wh, video_frames, per_video=3, split="valid", jitter=False)
    out = []
    for i in range(num):
        frame, mask, prompt = ds.raw(i)
        out.append((to_model_inputs(frame, mask, prompt, image_size), mask))
    return out


def evaluate_sam2(model, samples: list, device: str, batch_size: int = 32, use_autocast: bool = True) -> float:
    """Mean IoU (at the frame's resolution) of the candidate with the highest predicted IoU."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    ious = []
    with torch.no_grad():
        for s in range(0, len(samples), batch_size):
            chunk = samples[s:s + batch_size]
            batch = {k: torch.stack([c[0][k] for c in chunk]) for k in ("image", "points", "labels", "box")}
            with autocast(device, use_autocast):
                masks, scores = sam2_forward(model, batch, device)
            best = scores.float().argmax(1)
            low = masks[torch.arange(len(chunk)), best].float()
            for j, (_, gt) in enumerate(chunk):
                pred = F.interpolate(low[j][None, None], size=gt.shape, mode="bilinear", align_corners=False)[0, 0] > 0
                pred = pred.cpu().numpy()
                union = (pred | gt).sum()
                ious.append(1.0 if union == 0 else float((pred & gt).sum() / union))
    model.train(was_training)
    return float(np.mean(ious)) if ious else float("nan")


# ============================================================================ training loop


@dataclass
class Sam2TrainConfig:
    out: str
    steps: int = 4000
    batch_size: int = 32
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    data_size: str = "320x240"
    video_frames: int = 8
    per_video: int = 4
    workers: int = 0
    device: str = "auto"
    bf16: bool = True
    log_every: int = 20
    eval_every: int = 500
    val_samples: int = 256
    save_every: int = 500
    keep_checkpoints: int = 2
    save_dtype: str = "bf16"
    resume: str = "auto"
    max_minutes: float = 0.0  # stop (with a checkpoint) after this many minutes; 0 = no limit
    fit_minutes: float = 0.0  # fresh run: cut `steps` to what fits in this many minutes; 0 = off
    model: SmallSam2Config = field(default_factory=SmallSam2Config)


def save_sam2_final(model, processor, folder: Path, save_dtype: str, info: dict) -> Path:
    import copy

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[save_dtype]
    m = copy.deepcopy(model).to("cpu", dtype).eval()
    m.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    write_json(folder / "training.json", info)
    return folder


def train_sam2(cfg: Sam2TrainConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Train (or resume) the small SAM2; returns a summary dict (also written to ``out/summary.json``)."""
    say, out, device, size_wh, ckpt_path, state = start_run(cfg, "train_small_sam2", progress)
    if state is not None:
        cfg.model = SmallSam2Config.from_dict(state["model_config"])  # the architecture is fixed at step 0
    model, processor = build_small_sam2(cfg.model, cfg.seed)
    model.to(device).train()
    n_params = count_parameters(model)
    say(f"small SAM2: {n_params / 1e6:.2f} M parameters, input {cfg.model.image_size}px, device {device}")
    write_json(out / "run.json", {"config": asdict(cfg), "parameters": n_params})
    val = build_sam2_validation(cfg.seed, cfg.model.image_size, cfg.val_samples, size_wh, cfg.video_frames)
    dataset = Sam2SyntheticDataset(cfg.seed, cfg.model.image_size, size_wh, cfg.video_frames, cfg.per_video)

    def loss_fn(batch, step):
        with autocast(device, cfg.bf16):
            masks, scores = sam2_forward(model, batch, device)
        return sam2_loss(masks, scores, batch["mask"].to(device))

    return run_training(model=model, cfg=cfg, out=out, device=device, say=say, state=state,
                        model_config=asdict(cfg.model), dataset=dataset, loss_fn=loss_fn,
                        eval_fn=lambda: evaluate_sam2(model, val, device, use_autocast=cfg.bf16), eval_key="miou",
                        save_final=lambda info: save_sam2_final(model, processor, out / "final", cfg.save_dtype, info),
                        ckpt_path=ckpt_path)
