"""Training of the small XMem (our network, reduced widths) on synthetic clips: the official recipe in miniature.

Part of issue 8 (small shipped models). Each sample is a clip of ``clip_frames`` (default 8) frames
drawn in order, with random gaps of up to ``max_skip`` frames and a random direction, from a synthetic
``train`` video generated on the fly (seeded by the sample index, so a resumed run sees the same
stream), with up to ``max_objects`` (3) objects visible in its first frame; random horizontal flip.
As in the official ``XMemTrainer.do_pass``: all frames are key-encoded at once; the first frame's
ground-truth masks are value-encoded into memory; every later frame reads memory (dense softmax over
all memory elements of the first frame plus ``num_ref_frames - 1`` random earlier frames once there
are more), is segmented by the decoder with the sensory memory updated, and (except the last) is
value-encoded from its *predicted* probabilities and added to memory, with a deep sensory update with
probability ``deep_update_prob``. Absent object slots are masked by a selector before the soft
aggregation. Loss over the frames after the first: bootstrapped cross-entropy (plain CE before
``start_warm``, then the hardest pixels, shrinking linearly to the top 15 % at ``end_warm``) + dice.
AdamW, bf16 autocast on CUDA, gradient clipping, warm-up + cosine decay.

Validation J: the real inference path (:class:`~videoseg_r1.segmentation.propagation.XMemPropagator`
on a copy of the network) on ``valid`` videos, key frame 0 with the ground-truth masks, J = mask IoU
averaged over the later frames and the objects. Outputs under ``out``: ``checkpoints/``,
``train_log.json``, ``summary.json`` and ``final/xmem.safetensors`` (flat state dict with the official
names, fp16/bf16, loadable by ``load_xmem``) + ``final/training.json``. Run it with
``scripts/train_small_xmem.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from videoseg_r1.training.segmenter_training import (IMAGENET_MEAN, IMAGENET_STD, autocast, count_parameters,
                                                     run_training, start_run, visible_objects, write_json)


@dataclass
class SmallXMemConfig:
    """Widths of the small XMem (an ``XMemConfig``); defaults: ~3.27 M parameters (~6.5 MB in fp16)."""

    key_dim: int = 32
    value_dim: int = 96
    hidden_dim: int = 32
    key_backbone: str = "resnet18"
    value_backbone: str = "resnet18"
    backbone_width: int = 32
    decoder_dims: tuple = (96, 48, 48)

    def xmem_config(self):
        from videoseg_r1.segmentation.xmem.network import XMemConfig

        return XMemConfig(key_dim=self.key_dim, value_dim=self.value_dim, hidden_dim=self.hidden_dim,
                          key_backbone=self.key_backbone, value_backbone=self.value_backbone,
                          backbone_width=self.backbone_width, decoder_dims=tuple(self.decoder_dims))

    @classmethod
    def from_dict(cls, d: dict) -> "SmallXMemConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ============================================================================ data


class XMemClipDataset:
    """Map-style: item ``i`` -> clip dict with images (T, 3, H, W) normalised, masks (N, T, H, W) float
    in {0, 1} for ``max_objects`` slots, selector (N,) (1 = a real object)."""

    def __init__(self, seed: int, size_wh: tuple[int, int] = (160, 128), clip_frames: int = 8, video_frames: int = 24,
                 max_skip: int = 3, max_objects: int = 3, min_area: int = 24, split: str = "train"):
        w, h = size_wh
        if w % 16 or h % 16:
            raise ValueError(f"XMem training frames must be multiples of 16, got {w}x{h}")
        self.seed, self.size_wh, self.clip_frames, self.video_frames = seed, tuple(size_wh), clip_frames, video_frames
        self.max_skip, self.max_objects, self.min_area, self.split = max_skip, max_objects, min_area, split

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, i: int) -> dict:
        import torch

        from videoseg_r1.data.synthetic import generate_video

        rng = np.random.default_rng([self.seed, 11, int(i)])
        for attempt in range(20):
            video = generate_video(self.seed, self.split, int(i) + attempt * 1_000_003,
                                   frames=max(self.video_frames, self.clip_frames), size=self.size_wh)
            t_total = video.num_frames
            skip = int(rng.integers(1, self.max_skip + 1))
            while skip > 1 and (self.clip_frames - 1) * skip >= t_total:
                skip -= 1
            gaps = rng.integers(1, skip + 1, self.clip_frames - 1)
            span = int(gaps.sum())
            start = int(rng.integers(0, t_total - span)) if t_total > span else 0
            idx = np.minimum(start + np.concatenate([[0], np.cumsum(gaps)]), t_total - 1)
            if rng.random() < 0.5:
                idx = idx[::-1]
            ids = visible_objects(video.label_maps[idx[0]], self.min_area)
            if not ids:
                continue
            rng.shuffle(ids)
            ids = ids[:int(rng.integers(1, min(self.max_objects, len(ids)) + 1))]
            frames = video.frames[idx]
            labels = video.label_maps[idx]
            if rng.random() < 0.5:
                frames, labels = frames[:, :, ::-1], labels[:, :, ::-1]
            x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
            x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            lab = torch.from_numpy(np.ascontiguousarray(labels)).long()
            masks = torch.zeros(self.max_objects, *lab.shape)
            for k, obj in enumerate(ids):
                masks[k] = (lab == obj).float()
            selector = torch.zeros(self.max_objects)
            selector[:len(ids)] = 1
            return {"images": x, "masks": masks, "selector": selector}
        raise RuntimeError(f"no clip with a visible object for sample {i}")


# ============================================================================ forward pass


def read_memory(query_key, query_selection, mem_key, mem_shrinkage, mem_value):
    """Dense XMem readout (training: softmax over all memory elements, no top-k).

    query_key/selection (B, Ck, h, w); mem_key (B, Ck, T, h, w); mem_shrinkage (B, 1, T, h, w);
    mem_value (B, N, Cv, T, h, w) -> readout (B, N, Cv, h, w). Anisotropic L2 similarity (XMem eq. 3)."""
    import torch

    with torch.autocast(query_key.device.type, enabled=False):  # the affinity stays float32 under bf16 autocast
        return _read_memory_fp32(query_key, query_selection, mem_key, mem_shrinkage, mem_value)


def _read_memory_fp32(query_key, query_selection, mem_key, mem_shrinkage, mem_value):
    import torch

    b, ck, h, w = query_key.shape
    n, cv = mem_value.shape[1:3]
    mk = mem_key.flatten(2).float()  # (B, Ck, L)
    ms = mem_shrinkage.flatten(2).float()  # (B, 1, L)
    qk = query_key.flatten(2).float()  # (B, Ck, Q)
    qe = query_selection.flatten(2).float()
    a = mk.transpose(1, 2).pow(2) @ qe  # (B, L, Q)
    two_ab = 2 * mk.transpose(1, 2) @ (qk * qe)
    b_sq = (qe * qk.pow(2)).sum(1, keepdim=True)
    sim = (-a + two_ab - b_sq) * ms.transpose(1, 2) / math.sqrt(ck)
    affinity = torch.softmax(sim, dim=1)  # over memory
    values = mem_value.flatten(3).flatten(1, 2).float()  # (B, N*Cv, L)
    out = values @ affinity  # (B, N*Cv, Q)
    return out.view(b, n, cv, h, w)


def xmem_clip_forward(net, images, first_masks, selector, num_ref_frames: int = 3, deep_update_prob: float = 0.2,
                      rng: np.random.Generator | None = None):
    """Official training pass over a clip. images (B, T, 3, H, W), first_masks (B, N, H, W),
    selector (B, N) -> logits (B, T-1, N+1, H, W) and probabilities (same) for frames 1..T-1."""
    import torch

    from videoseg_r1.segmentation.xmem.network import aggregate

    rng = rng or np.random.default_rng()
    b, t = images.shape[:2]
    n = first_masks.shape[1]
    key, shrinkage, selection, f16, f8, f4 = net.encode_key(images.flatten(0, 1))

    def unflat(x):
        return x.view(b, t, *x.shape[1:])

    key, shrinkage, selection, f16, f8, f4 = map(unflat, (key, shrinkage, selection, f16, f8, f4))
    hidden = torch.zeros(b, n, net.hidden_dim, *key.shape[-2:], device=images.device, dtype=f16.dtype)
    masks0 = first_masks * selector[:, :, None, None]
    v16, hidden = net.encode_value(images[:, 0], f16[:, 0], hidden, masks0)
    values = [v16]  # per memory frame: (B, N, Cv, h, w)
    sel = selector[:, :, None, None].float()
    all_logits, all_prob = [], []
    for ti in range(1, t):
        if ti <= num_ref_frames:
            ref = list(range(ti))
        else:
            ref = [0] + sorted((rng.permutation(ti - 1)[:num_ref_frames - 1] + 1).tolist())
        mem_key = key[:, ref].transpose(1, 2)  # (B, Ck, R, h, w)
        mem_shr = shrinkage[:, ref].transpose(1, 2)
        mem_val = torch.stack([values[r] for r in ref], 3)  # (B, N, Cv, R, h, w)
        readout = read_memory(key[:, ti], selection[:, ti], mem_key, mem_shr, mem_val).to(f16.dtype)
        last = ti == t - 1
        new_hidden, logits = net.decoder(f16[:, ti], f8[:, ti], f4[:, ti], hidden, readout, update_hidden=not last)
        prob = torch.sigmoid(logits.float()) * sel
        logits_bg, prob_bg = aggregate(prob, dim=1)
        all_logits.append(logits_bg)
        all_prob.append(prob_bg)
        if not last:
            hidden = new_hidden
            deep = bool(rng.random() < deep_update_prob)
            v16, hidden = net.encode_value(images[:, ti], f16[:, ti], hidden, prob_bg[:, 1:].to(f16.dtype),
                                           deep_update=deep)
            values.append(v16)
    return torch.stack(all_logits, 1), torch.stack(all_prob, 1)


def bootstrapped_ce(logits, target, step: int, start_warm: int, end_warm: int, top_p: float = 0.15):
    """Official BootstrappedCE: plain CE until ``start_warm``, then the mean over the hardest pixels,
    their share going linearly from 100 % to ``top_p`` at ``end_warm``. logits (B, C, H, W), target (B, H, W)."""
    import torch.nn.functional as F

    if step < start_warm:
        return F.cross_entropy(logits, target), 1.0
    raw = F.cross_entropy(logits, target, reduction="none").view(-1)
    p = top_p if step > end_warm else top_p + (1 - top_p) * ((end_warm - step) / max(1, end_warm - start_warm))
    loss, _ = raw.topk(max(1, int(raw.numel() * p)), sorted=False)
    return loss.mean(), p


def xmem_loss(logits, prob, masks, selector, step: int, start_warm: int, end_warm: int) -> tuple[Any, dict]:
    """logits/prob (B, T-1, N+1, H, W); masks (B, N, T, H, W) GT of the whole clip; selector (B, N)."""
    import torch

    b, t1 = logits.shape[:2]
    gt = masks[:, :, 1:].transpose(1, 2)  # (B, T-1, N, H, W)
    cls = torch.cat([torch.full_like(gt[:, :, :1], 0.5), gt], 2).argmax(2)  # 0 = background
    cls = torch.where(gt.sum(2) > 0, cls, torch.zeros_like(cls))
    ce, p = bootstrapped_ce(logits.flatten(0, 1), cls.flatten(0, 1), step, start_warm, end_warm)
    pr = prob[:, :, 1:].flatten(-2)
    g = gt.flatten(-2)
    dice_per = 1 - (2 * (pr * g).sum(-1) + 1) / (pr.sum(-1) + g.sum(-1) + 1)  # (B, T-1, N)
    sel = selector[:, None, :].expand_as(dice_per)
    dice = (dice_per * sel).sum() / sel.sum().clamp(min=1)
    with torch.no_grad():
        pred = prob.argmax(2)  # (B, T-1, H, W)
        ious = []
        for k in range(gt.shape[2]):
            pk, gk = (pred == k + 1), gt[:, :, k] > 0.5
            inter = (pk & gk).flatten(-2).sum(-1).float()
            union = (pk | gk).flatten(-2).sum(-1).float()
            ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter)))
        iou = torch.stack(ious, -1)
        train_j = (iou * sel).sum() / sel.sum().clamp(min=1)
    loss = ce + dice
    return loss, {"loss": loss.detach(), "ce": ce.detach(), "dice": dice.detach(), "top_p": float(p),
                  "train_j": train_j}


# ============================================================================ validation


def build_xmem_validation(seed: int, size_wh: tuple[int, int], num_videos: int, frames: int, max_objects: int = 3,
                          min_area: int = 24) -> list:
    """(frames (T, H, W, 3) uint8, {obj_id: (T, H, W) bool}) for ``valid`` videos; objects visible on frame 0."""
    from videoseg_r1.data.synthetic import generate_video

    out = []
    for v in range(num_videos):
        video = generate_video(seed, "valid", v, frames=frames, size=size_wh)
        ids = visible_objects(video.label_maps[0], min_area)[:max_objects]
        if ids:
            out.append((video.frames, {k: video.label_maps == k for k in ids}))
    return out


def evaluate_xmem(net, samples: list, device: str, short_side: int | None = None) -> float:
    """Mean J over the frames after the key frame 0 and the objects, through XMemPropagator."""
    import copy

    import torch

    from videoseg_r1.config import PropagatorConfig
    from videoseg_r1.segmentation.propagation import XMemPropagator
    from videoseg_r1.video import ArrayVideo

    if not samples:
        return float("nan")
    h = samples[0][0].shape[1]
    net_copy = copy.deepcopy(net).float().eval()
    prop = XMemPropagator(net_copy, PropagatorConfig(device=device, dtype="float32", short_side=short_side or h),
                          directions="forward", cuda_graphs=False)
    js = []
    with torch.no_grad():
        for frames, gts in samples:
            key_masks = {k: m[0] for k, m in gts.items()}
            for t, masks in prop.propagate(ArrayVideo(list(frames)), 0, key_masks):
                if t == 0:
                    continue
                for k, gt in gts.items():
                    pred = masks[k]
                    union = (pred | gt[t]).sum()
                    js.append(1.0 if union == 0 else float((pred & gt[t]).sum() / union))
    return float(np.mean(js)) if js else float("nan")


# ============================================================================ training loop


@dataclass
class XMemTrainConfig:
    out: str
    steps: int = 6000
    batch_size: int = 8
    lr: float = 2e-4  # official: 1e-5 fine-tuning from pre-training; from scratch a larger one
    weight_decay: float = 0.05
    warmup: int = 200
    grad_clip: float = 3.0
    seed: int = 0
    data_size: str = "160x128"
    clip_frames: int = 8
    video_frames: int = 24
    max_skip: int = 3
    max_objects: int = 3
    num_ref_frames: int = 3
    deep_update_prob: float = 0.2
    start_warm_frac: float = 0.15
    end_warm_frac: float = 0.5
    workers: int = 0
    device: str = "auto"
    bf16: bool = True
    log_every: int = 20
    eval_every: int = 500
    val_videos: int = 24
    val_frames: int = 24
    save_every: int = 500
    keep_checkpoints: int = 2
    save_dtype: str = "fp16"
    resume: str = "auto"
    max_minutes: float = 0.0
    fit_minutes: float = 0.0
    model: SmallXMemConfig = field(default_factory=SmallXMemConfig)


def save_xmem_final(net, folder: Path, save_dtype: str, info: dict) -> Path:
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[save_dtype]
    state = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in net.state_dict().items()}
    path = folder / "xmem.safetensors"
    tmp = folder / ".xmem.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "config": str(net.config.to_dict())})
    tmp.replace(path)
    write_json(folder / "training.json", info)
    return path


def train_xmem(cfg: XMemTrainConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Train (or resume) the small XMem; returns a summary dict (also written to ``out/summary.json``)."""
    import torch

    from videoseg_r1.segmentation.xmem.network import XMem

    say, out, device, size_wh, ckpt_path, state = start_run(cfg, "train_small_xmem", progress)
    if state is not None:
        cfg.model = SmallXMemConfig.from_dict(state["model_config"])
    torch.manual_seed(cfg.seed)
    net = XMem(cfg.model.xmem_config()).to(device).train()
    n_params = count_parameters(net)
    say(f"small XMem: {n_params / 1e6:.2f} M parameters, clips of {cfg.clip_frames} x {cfg.data_size}, device {device}")
    write_json(out / "run.json", {"config": asdict(cfg), "parameters": n_params})
    val = build_xmem_validation(cfg.seed, size_wh, cfg.val_videos, cfg.val_frames, cfg.max_objects)
    dataset = XMemClipDataset(cfg.seed, size_wh, cfg.clip_frames, cfg.video_frames, cfg.max_skip, cfg.max_objects)
    start_warm, end_warm = int(cfg.steps * cfg.start_warm_frac), int(cfg.steps * cfg.end_warm_frac)

    def loss_fn(batch, step):
        images = batch["images"].to(device)
        masks = batch["masks"].to(device)
        selector = batch["selector"].to(device)
        rng = np.random.default_rng([cfg.seed, 13, step])
        with autocast(device, cfg.bf16):
            logits, prob = xmem_clip_forward(net, images, masks[:, :, 0], selector, cfg.num_ref_frames,
                                             cfg.deep_update_prob, rng)
        return xmem_loss(logits.float(), prob.float(), masks, selector, step, start_warm, end_warm)

    return run_training(model=net, cfg=cfg, out=out, device=device, say=say, state=state,
                        model_config=asdict(cfg.model), dataset=dataset, loss_fn=loss_fn,
                        eval_fn=lambda: evaluate_xmem(net, val, device), eval_key="J",
                        save_final=lambda info: save_xmem_final(net, out / "final", cfg.save_dtype, info),
                        ckpt_path=ckpt_path)
