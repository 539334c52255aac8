"""Our XMem network (Cheng & Schwing, ECCV 2022): key encoder, value encoder, key projection, decoder.

The module tree and every parameter name/shape equal the official implementation's, so the released
``XMem.pth`` / ``XMem-s012.pth`` (flat state dicts with the prefixes ``key_encoder.``,
``value_encoder.``, ``key_proj.``, ``decoder.``) load with ``strict=True``. Widths and backbones are
configurable through :class:`XMemConfig` so tests can build a tiny network; the defaults are the
official ones. Used by :mod:`videoseg_r1.segmentation.xmem.inference` (per-frame memory loop) and
:func:`load_xmem` (checkpoint files).

Shapes: B = batch (frames), N = objects, C* = channels, H, W = padded image size (multiple of 16),
h, w = H/16, W/16 (the stride of keys, values and the sensory memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class XMemConfig:
    """Architecture hyper-parameters; the defaults are the official XMem release.

    ``backbone_width`` is the stem width of both ResNets (official 64); tiny test networks use 8.
    ``decoder_dims`` are the widths of the decoder at strides 16, 8 and 4 (official 512, 256, 256).
    ``hidden_dim`` = 0 disables the sensory memory (as the official code allows).
    """

    key_dim: int = 64
    value_dim: int = 512
    hidden_dim: int = 64
    key_backbone: str = "resnet50"
    value_backbone: str = "resnet18"
    backbone_width: int = 64
    decoder_dims: tuple[int, int, int] = (512, 256, 256)
    single_object: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


_BACKBONES = {"resnet18": ("basic", (2, 2, 2)), "resnet34": ("basic", (3, 4, 6)), "resnet50": ("bottleneck", (3, 4, 6))}


def _stage_channels(backbone: str, width: int) -> tuple[int, int, int]:
    """Output channels (stride 4, 8, 16) of the first three ResNet stages."""
    kind, _ = _backbone_spec(backbone)
    expansion = 4 if kind == "bottleneck" else 1
    return width * expansion, 2 * width * expansion, 4 * width * expansion


def _backbone_spec(backbone: str) -> tuple[str, tuple[int, int, int]]:
    if backbone not in _BACKBONES:
        raise ValueError(f"unknown XMem backbone {backbone!r}; choose one of {sorted(_BACKBONES)}")
    return _BACKBONES[backbone]


# ------------------------------------------------------------------------------------- ResNet parts
# Parameter names follow torchvision / the official resnet.py (conv1, bn1, ..., downsample.0/.1).


def _memory_format(w: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) \
        and not w.is_contiguous() else torch.contiguous_format


def _folded_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv followed by an eval-mode BatchNorm as one conv: (weight, bias) in the conv's dtype and
    memory format, folded in float32, cached on the conv until any of the tensors changes."""
    w = conv.weight
    tensors = (w, bn.weight, bn.bias, bn.running_mean, bn.running_var) + ((conv.bias,) if conv.bias is not None else ())
    key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors) + (w.stride(), bn.eps)
    cache = getattr(conv, "_bn_fold_cache", None)
    if cache is None or cache[0] != key:
        acc = torch.promote_types(w.dtype, torch.float32)  # fold in float32 (float64 stays float64)
        with torch.no_grad():
            scale = bn.weight.to(acc) / torch.sqrt(bn.running_var.to(acc) + bn.eps)
            bias = bn.bias.to(acc) - bn.running_mean.to(acc) * scale
            if conv.bias is not None:
                bias = bias + conv.bias.to(acc) * scale
            weight = (w.to(acc) * scale.view(-1, 1, 1, 1)).to(w.dtype).contiguous(memory_format=_memory_format(w))
            cache = (key, (weight, bias.to(w.dtype)))
        conv._bn_fold_cache = cache
    return cache[1]


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))``; at inference (BatchNorm in eval mode, no gradient wanted) one conv with the
    BatchNorm folded into its weights: one kernel instead of two, the same function up to rounding."""
    if bn.training or not bn.track_running_stats or bn.running_var is None or (
            torch.is_grad_enabled() and (conv.weight.requires_grad or bn.weight.requires_grad)):
        return bn(conv(x))
    weight, bias = _folded_conv_bn(conv, bn)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_ch != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        identity = x if self.downsample is None else conv_bn(self.downsample[0], self.downsample[1], x)
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), as the official resnet.py."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * 4
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(conv_bn(self.conv1, self.bn1, x))
        out = F.relu(conv_bn(self.conv2, self.bn2, out))
        out = conv_bn(self.conv3, self.bn3, out)
        identity = x if self.downsample is None else conv_bn(self.downsample[0], self.downsample[1], x)
        return F.relu(out + identity)


def _make_stages(backbone: str, width: int) -> list[nn.Sequential]:
    """The first three residual stages (strides 4, 8, 16 of the image)."""
    kind, blocks = _backbone_spec(backbone)
    block = Bottleneck if kind == "bottleneck" else BasicBlock
    stages, in_ch = [], width
    for i, n in enumerate(blocks):
        planes = width * 2**i
        layers = [block(in_ch, planes, 1 if i == 0 else 2)]
        in_ch = planes * block.expansion
        layers += [block(in_ch, planes) for _ in range(n - 1)]
        stages.append(nn.Sequential(*layers))
    return stages


# ------------------------------------------------------------------------------------- group modules
# "Group" tensors carry an object dimension: (B, N, C, h, w). Convolutions run on (B*N, C, h, w).


def _group_conv(conv: nn.Conv2d, g: torch.Tensor) -> torch.Tensor:
    b, n = g.shape[:2]
    out = conv(g.flatten(0, 1))
    return out.reshape(b, n, *out.shape[1:])


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.shape[1] > 1 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous()


def upsample_bilinear(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)`` on (B, C, h, w),
    computed by the NCHW kernel and returned in x's memory format: the channels-last CUDA kernel
    took ~0.3 ms per call here (H100, bf16), the NCHW one plus two layout copies a few microseconds."""
    cl = _is_channels_last(x)
    if x.shape[1] == 1:  # (B, 1, h, w): make the strides unambiguously NCHW (no copy)
        x = x.reshape(x.shape[0], *x.shape[2:]).unsqueeze(1)
    else:
        x = x.contiguous()
    out = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last) if cl else out


def _group_resize(g: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
    b, n = g.shape[:2]
    if mode == "bilinear":
        out = upsample_bilinear(g.flatten(0, 1), scale)
    else:
        out = F.interpolate(g.flatten(0, 1), scale_factor=scale, mode=mode)
    return out.reshape(b, n, *out.shape[1:])


def _group_cat(parts: list[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """Concatenate group tensors (B or 1, N or 1, C_i, h, w) (broadcast over B and N) along the
    channels into one (B, N, sum C_i, h, w) whose (B*N, C, h, w) view is in the requested memory
    format, so that the convolution that follows needs no layout conversion."""
    b = max(p.shape[0] for p in parts)
    n = max(p.shape[1] for p in parts)
    h, w = parts[0].shape[-2:]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((b * n, sum(p.shape[2] for p in parts), h, w), dtype=parts[0].dtype, device=parts[0].device,
                      memory_format=fmt)
    view = out.unflatten(0, (b, n))
    c = 0
    for p in parts:
        view[:, :, c:c + p.shape[2]].copy_(p.expand(b, n, *p.shape[2:]))
        c += p.shape[2]
    return view


def _distribute(x: torch.Tensor, g: torch.Tensor, channels_last: bool | None = None) -> torch.Tensor:
    """Concatenate per-frame features x (B, C, h, w) in front of each object's g (B, N, C', h, w)."""
    if channels_last is None:
        channels_last = _is_channels_last(x)
    return _group_cat([x.unsqueeze(1), g], channels_last)


class GroupResBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.downsample = None if in_dim == out_dim else nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)

    @property
    def channels_last(self) -> bool:
        """Whether the weights are channels-last (inputs are then built in that format)."""
        return _is_channels_last(self.conv1.weight)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        out = _group_conv(self.conv1, F.relu(g))
        out = _group_conv(self.conv2, F.relu(out))
        skip = g if self.downsample is None else _group_conv(self.downsample, g)
        return out + skip

    def forward_distributed(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``forward(_distribute(x, g))`` without repeating the frame-level work per object.

        The first conv and the skip conv are linear in their input channels, so their frame-level
        part (input channels of x (B, Cx, h, w)) is computed once per frame and broadcast over the N
        objects of g (B, N, Cg, h, w); only the object part runs per object. Equal up to the
        summation order (floating-point noise); used for N > 1 (for N = 1 it saves nothing)."""
        if self.downsample is None:
            return self(_distribute(x, g, self.channels_last))
        cx = x.shape[1]
        w1x, w1g, wdx, wdg = self._split_weights(cx)
        b, n = g.shape[:2]
        gf = g.flatten(0, 1)
        p1, pd = self.conv1.padding, self.downsample.padding
        out = F.conv2d(F.relu(gf), w1g, None, padding=p1).reshape(b, n, -1, *g.shape[-2:])
        out = out + F.conv2d(F.relu(x), w1x, self.conv1.bias, padding=p1).unsqueeze(1)
        out = _group_conv(self.conv2, F.relu(out))
        skip = F.conv2d(gf, wdg, None, padding=pd).reshape(b, n, -1, *g.shape[-2:])
        skip = skip + F.conv2d(x, wdx, self.downsample.bias, padding=pd).unsqueeze(1)
        return out + skip

    def _split_weights(self, cx: int) -> tuple[torch.Tensor, ...]:
        """The conv1 / downsample weights split at input channel ``cx``, cached (in the weights'
        memory format) until the weights change."""
        w1, wd = self.conv1.weight, self.downsample.weight
        if torch.is_grad_enabled() and (w1.requires_grad or wd.requires_grad):  # training: keep the graph
            return w1[:, :cx], w1[:, cx:], wd[:, :cx], wd[:, cx:]
        key = (cx, w1.data_ptr(), w1._version, wd.data_ptr(), wd._version, w1.dtype, w1.stride(), wd.stride())
        cache = getattr(self, "_split_cache", None)
        if cache is None or cache[0] != key:
            fmt = _memory_format(w1)
            parts = tuple(p.detach().contiguous(memory_format=fmt)
                          for p in (w1[:, :cx], w1[:, cx:], wd[:, :cx], wd[:, cx:]))
            cache = (key, parts)
            self._split_cache = cache
        return cache[1]


class _ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
        return x * torch.sigmoid(att)[:, :, None, None]


class _Conv(nn.Module):
    """Holds a conv under the name ``conv`` (the official CBAM's BasicConv wrapper)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=(kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _SpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.spatial = _Conv(2, 1, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Convolutional block attention (channel gate, then spatial gate) on (B, C, h, w)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.ChannelGate = _ChannelGate(channels, reduction)
        self.SpatialGate = _SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Fuse frame features x (B, Cx, h, w) into object features g (B, N, Cg, h, w) -> (B, N, Cout, h, w)."""

    def __init__(self, x_in_dim: int, g_in_dim: int, g_mid_dim: int, g_out_dim: int):
        super().__init__()
        self.block1 = GroupResBlock(x_in_dim + g_in_dim, g_mid_dim)
        self.attention = CBAM(g_mid_dim)
        self.block2 = GroupResBlock(g_mid_dim, g_out_dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, n = g.shape[:2]
        g = self.block1.forward_distributed(x, g) if n > 1 else \
            self.block1(_distribute(x, g, self.block1.channels_last))
        r = self.attention(g.flatten(0, 1)).reshape(b, n, *g.shape[2:])
        return self.block2(g + r)


def _gru_update(values: torch.Tensor, h: torch.Tensor, hidden_dim: int) -> torch.Tensor:
    """XMem's GRU variant: the candidate is computed before the forget gate (as the official code)."""
    forget = torch.sigmoid(values[:, :, :hidden_dim])
    update = torch.sigmoid(values[:, :, hidden_dim:2 * hidden_dim])
    candidate = torch.tanh(values[:, :, 2 * hidden_dim:])
    return forget * h * (1 - update) + update * candidate


class HiddenReinforcer(nn.Module):
    """Deep update of the sensory memory from the value features (value encoder side)."""

    def __init__(self, g_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transform = nn.Conv2d(g_dim + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gh = _group_cat([g, h], _is_channels_last(self.transform.weight))
        return _gru_update(_group_conv(self.transform, gh), h, self.hidden_dim)


class HiddenUpdater(nn.Module):
    """Per-frame update of the sensory memory from the decoder's multi-scale features."""

    def __init__(self, g_dims: tuple[int, int, int], mid_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.g16_conv = nn.Conv2d(g_dims[0], mid_dim, 1)
        self.g8_conv = nn.Conv2d(g_dims[1], mid_dim, 1)
        self.g4_conv = nn.Conv2d(g_dims[2], mid_dim, 1)
        self.transform = nn.Conv2d(mid_dim + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(self, g16: torch.Tensor, g8: torch.Tensor, g4: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        g = (_group_conv(self.g16_conv, g16) + _group_conv(self.g8_conv, _group_resize(g8, 0.5, "area"))
             + _group_conv(self.g4_conv, _group_resize(g4, 0.25, "area")))
        gh = _group_cat([g, h], _is_channels_last(self.transform.weight))
        return _gru_update(_group_conv(self.transform, gh), h, self.hidden_dim)


class UpsampleBlock(nn.Module):
    def __init__(self, skip_dim: int, g_up_dim: int, g_out_dim: int):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_dim, g_up_dim, 3, padding=1)
        self.out_conv = GroupResBlock(g_up_dim, g_out_dim)

    def forward(self, skip_f: torch.Tensor, up_g: torch.Tensor) -> torch.Tensor:
        g = _group_resize(up_g, 2.0, "bilinear") + self.skip_conv(skip_f).unsqueeze(1)
        return self.out_conv(g)


# ------------------------------------------------------------------------------------- encoders


class KeyEncoder(nn.Module):
    """ResNet stem + 3 stages on the RGB frame -> f16, f8, f4 (official names: res2, layer2, layer3)."""

    def __init__(self, backbone: str = "resnet50", width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.res2, self.layer2, self.layer3 = _make_stages(backbone, width)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(conv_bn(self.conv1, self.bn1, image)), 3, 2, 1)
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class ValueEncoder(nn.Module):
    """ResNet on [RGB, object mask, other objects' mask] per object, fused with the key features f16."""

    def __init__(self, key_f16_dim: int, value_dim: int, hidden_dim: int, backbone: str = "resnet18",
                 width: int = 64, single_object: bool = False):
        super().__init__()
        self.single_object = single_object
        self.conv1 = nn.Conv2d(3 + (1 if single_object else 2), width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1, self.layer2, self.layer3 = _make_stages(backbone, width)
        self.fuser = FeatureFusionBlock(key_f16_dim, _stage_channels(backbone, width)[2], value_dim, value_dim)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim) if hidden_dim > 0 else None

    def forward(self, image: torch.Tensor, f16: torch.Tensor, hidden: torch.Tensor | None, masks: torch.Tensor,
                others: torch.Tensor, deep_update: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = masks.unsqueeze(2) if self.single_object else torch.stack([masks, others], 2)
        g = _distribute(image, g)  # (B, N, 3 + 2, H, W)
        b, n = g.shape[:2]
        g = F.relu(F.max_pool2d(conv_bn(self.conv1, self.bn1, g.flatten(0, 1)), 3, 2, 1))
        g = self.layer3(self.layer2(self.layer1(g)))
        g = self.fuser(f16, g.reshape(b, n, *g.shape[1:]))
        if deep_update and self.hidden_reinforce is not None:
            hidden = self.hidden_reinforce(g, hidden)
        return g, hidden


class KeyProjection(nn.Module):
    """f16 -> key (B, Ck, h, w), shrinkage (B, 1, h, w) >= 1, selection (B, Ck, h, w) in (0, 1)."""

    def __init__(self, in_dim: int, key_dim: int):
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        self.d_proj = nn.Conv2d(in_dim, 1, 3, padding=1)
        self.e_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)

    def forward(self, f16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.key_proj(f16), self.d_proj(f16) ** 2 + 1, torch.sigmoid(self.e_proj(f16))


class Decoder(nn.Module):
    """Memory readout + sensory memory + multi-scale features -> per-object logits at full size."""

    def __init__(self, key_dims: tuple[int, int, int], value_dim: int, hidden_dim: int,
                 decoder_dims: tuple[int, int, int] = (512, 256, 256)):
        super().__init__()
        c4, c8, c16 = key_dims  # stride 4, 8, 16 channels of the key encoder
        d16, d8, d4 = decoder_dims
        self.hidden_dim = hidden_dim
        self.fuser = FeatureFusionBlock(c16, value_dim + hidden_dim, d16, d16)
        self.hidden_update = HiddenUpdater((d16, d8, d4 + 1), d8, hidden_dim) if hidden_dim > 0 else None
        self.up_16_8 = UpsampleBlock(c8, d16, d8)
        self.up_8_4 = UpsampleBlock(c4, d8, d4)
        self.pred = nn.Conv2d(d4, 1, 3, padding=1)

    def forward(self, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, hidden: torch.Tensor | None,
                readout: torch.Tensor, update_hidden: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """readout (B, N, Cv, h, w), hidden (B, N, Ch, h, w) -> (new hidden or None, logits (B, N, H, W))."""
        b, n = readout.shape[:2]
        cl = self.fuser.block1.channels_last
        g16 = self.fuser(f16, readout if self.hidden_update is None else _group_cat([readout, hidden], cl))
        g8 = self.up_16_8(f8, g16)
        g4 = self.up_8_4(f4, g8)
        logits = self.pred(F.relu(g4.flatten(0, 1)))  # (B*N, 1, H/4, W/4)
        new_hidden = None
        if update_hidden and self.hidden_update is not None:
            g4 = _group_cat([g4, logits.reshape(b, n, 1, *logits.shape[-2:])], cl)
            new_hidden = self.hidden_update(g16, g8, g4, hidden)
        logits = upsample_bilinear(logits, 4.0)
        return new_hidden, logits.reshape(b, n, *logits.shape[-2:])


# ------------------------------------------------------------------------------------- the network


def aggregate(prob: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft aggregation (STM): per-object probabilities (.., N, ..) -> logits and probabilities
    with the background prepended (.., N + 1, ..). Computed in float32 (bf16 cannot hold 1 - 1e-7)."""
    prob = prob.float()
    with_bg = torch.cat([torch.prod(1 - prob, dim=dim, keepdim=True), prob], dim).clamp(1e-7, 1 - 1e-7)
    odds = with_bg / (1 - with_bg)
    # softmax(log(odds)) = odds / sum(odds): the same up to rounding, without the slow channel softmax
    # (CUDA's softmax over a non-last dim of a few channels took ~0.14 ms per frame at 480p)
    return torch.log(odds), odds / odds.sum(dim, keepdim=True)


class XMem(nn.Module):
    """The XMem network. ``XMem()`` is the official architecture; ``load_state_dict(official)`` is strict.

    The memory loop lives in :class:`videoseg_r1.segmentation.xmem.inference.InferenceCore`.
    """

    def __init__(self, config: XMemConfig | None = None, **overrides):
        super().__init__()
        config = config or XMemConfig()
        if overrides:
            config = XMemConfig(**{**config.to_dict(), **overrides})
        self.config = config
        key_dims = _stage_channels(config.key_backbone, config.backbone_width)
        self.key_encoder = KeyEncoder(config.key_backbone, config.backbone_width)
        self.value_encoder = ValueEncoder(key_dims[2], config.value_dim, config.hidden_dim, config.value_backbone,
                                          config.backbone_width, config.single_object)
        self.key_proj = KeyProjection(key_dims[2], config.key_dim)
        self.decoder = Decoder(key_dims, config.value_dim, config.hidden_dim, tuple(config.decoder_dims))
        for module in (self.value_encoder.hidden_reinforce, self.decoder.hidden_update):
            if module is not None:
                nn.init.xavier_normal_(module.transform.weight)

    @property
    def key_dim(self) -> int:
        return self.config.key_dim

    @property
    def value_dim(self) -> int:
        return self.config.value_dim

    @property
    def hidden_dim(self) -> int:
        return self.config.hidden_dim

    def encode_key(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image (B, 3, H, W) normalised -> key (B, Ck, h, w), shrinkage (B, 1, h, w),
        selection (B, Ck, h, w), f16 (B, C16, h, w), f8 (B, C8, 2h, 2w), f4 (B, C4, 4h, 4w).

        Keys do not depend on memory, so callers encode a batch of upcoming frames at once."""
        f16, f8, f4 = self.key_encoder(image)
        key, shrinkage, selection = self.key_proj(f16)
        return key, shrinkage, selection, f16, f8, f4

    def encode_value(self, image: torch.Tensor, f16: torch.Tensor, hidden: torch.Tensor | None, masks: torch.Tensor,
                     deep_update: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """image (B, 3, H, W), f16 (B, C16, h, w), hidden (B, N, Ch, h, w), masks (B, N, H, W) in [0, 1]
        -> value (B, N, Cv, h, w), hidden (deep-updated when ``deep_update``)."""
        n = masks.shape[1]
        others = masks.sum(1, keepdim=True) - masks if n > 1 else torch.zeros_like(masks)
        return self.value_encoder(image, f16, hidden, masks, others, deep_update)

    def segment(self, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor, readout: torch.Tensor,
                hidden: torch.Tensor | None, update_hidden: bool = True
                ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """-> (hidden, logits (B, N+1, H, W), prob (B, N+1, H, W)); channel 0 is the background."""
        hidden, logits = self.decoder(f16, f8, f4, hidden, readout, update_hidden)
        logits, prob = aggregate(torch.sigmoid(logits.float()), dim=1)
        return hidden, logits, prob

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load an official checkpoint dict strictly, converting a single-object one first."""
        self.load_state_dict(convert_single_object(state_dict, self.config.single_object), strict=True)


# ------------------------------------------------------------------------------------- checkpoints

_REQUIRED_KEYS = ("key_proj.key_proj.weight", "value_encoder.conv1.weight", "value_encoder.fuser.block2.conv2.weight",
                  "key_encoder.conv1.weight", "decoder.pred.weight")


def convert_single_object(state_dict: Mapping[str, torch.Tensor], single_object: bool = False) -> dict[str, torch.Tensor]:
    """Single-object checkpoint -> multi-object: the value encoder's first conv gets a zero-initialised
    input channel for the "other objects" mask (as the official loader's ``init_as_zero_if_needed``)."""
    out = dict(state_dict)
    w = out.get("value_encoder.conv1.weight")
    if w is not None and w.shape[1] == 4 and not single_object:
        out["value_encoder.conv1.weight"] = torch.cat([w, w.new_zeros(w.shape[0], 1, *w.shape[2:])], 1)
    return out


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> XMemConfig:
    """Read the architecture from a checkpoint (widths, backbones, sensory memory), as the official
    ``init_hyperparameters`` does for the key, value and hidden widths."""
    missing = [k for k in _REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise ValueError(f"not an XMem state dict: missing {missing}")
    hidden = state_dict.get("decoder.hidden_update.transform.weight")
    return XMemConfig(
        key_dim=int(state_dict["key_proj.key_proj.weight"].shape[0]),
        value_dim=int(state_dict["value_encoder.fuser.block2.conv2.weight"].shape[0]),
        hidden_dim=0 if hidden is None else int(hidden.shape[0]) // 3,
        key_backbone="resnet50" if "key_encoder.res2.0.conv3.weight" in state_dict else
        ("resnet34" if "key_encoder.res2.2.conv1.weight" in state_dict else "resnet18"),
        value_backbone="resnet50" if "value_encoder.layer1.0.conv3.weight" in state_dict else
        ("resnet34" if "value_encoder.layer1.2.conv1.weight" in state_dict else "resnet18"),
        backbone_width=int(state_dict["key_encoder.conv1.weight"].shape[0]),
        decoder_dims=(int(state_dict["decoder.fuser.block2.conv2.weight"].shape[0]),
                      int(state_dict["decoder.up_16_8.out_conv.conv2.weight"].shape[0]),
                      int(state_dict["decoder.up_8_4.out_conv.conv2.weight"].shape[0])),
    )


def _read_checkpoint(path_or_url: str | Path) -> dict[str, torch.Tensor]:
    text = str(path_or_url)
    if text.startswith(("http://", "https://")):
        try:
            return torch.hub.load_state_dict_from_url(text, map_location="cpu", weights_only=True, progress=False)
        except Exception as exc:  # offline, HTTP error, corrupt download
            raise RuntimeError(
                f"cannot fetch the XMem checkpoint {text}: {exc}. Download the file once (e.g. XMem.pth from "
                "the official XMem release) and pass its local path as the propagator checkpoint.") from None
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"XMem checkpoint not found: {path} (give the path of XMem.pth or XMem-s012.pth)")
    if path.suffix == ".safetensors":  # our trained small models (scripts/train_small_xmem.py): same flat names
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {type(exc).__name__}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, non-tensor payload
        raise ValueError(f"{path} is not a readable XMem checkpoint (truncated or not a PyTorch file?): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def load_xmem(path_or_url: str | Path, device: str | torch.device = "cpu") -> XMem:
    """Read an official XMem checkpoint (local path or URL, ``weights_only=True``; or a ``.safetensors``
    file with the same flat names, as written by ``scripts/train_small_xmem.py``), convert a
    single-object one, build the matching network, load it strictly and return it in eval mode."""
    state = _read_checkpoint(path_or_url)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path_or_url} does not contain a flat XMem state dict")
    try:
        config = config_from_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"{path_or_url}: {exc}") from None
    net = XMem(config)
    try:
        net.load_weights(state)
    except RuntimeError as exc:
        raise ValueError(f"{path_or_url} does not match the XMem architecture: {str(exc)[:2000]}") from None
    return net.to(device).eval()
