"""Grouped variable-length attention for the Qwen-VL vision tower under SDPA.

Without flash-attention, transformers' Qwen2.5-VL vision attention splits the packed patch
sequence at every window / image boundary and calls SDPA once per chunk: hundreds of tiny calls
per layer (a 448x448 frame has 16 windows, an 840x840 image 64), which makes the vision encoder
launch-bound. The module takes a single call with ``cu_seq_lens`` when the attention
implementation's name contains "flash"; we register such an implementation that groups the
chunks by length and runs one batched SDPA per distinct length (usually 2-4 per layer). The
arithmetic per chunk is unchanged (attention within each chunk only). ``Reasoner`` enables it
for the vision tower only (``enable_grouped_vision_attention``); the language model keeps SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ATTN_NAME = "videoseg_grouped_flash_sdpa"  # "flash" in the name selects the packed (cu_seqlens) code path


def grouped_varlen_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                             cu_seq_lens_q=None, cu_seq_lens_k=None, is_causal=False, **kwargs):
    """query/key/value: (1, heads, N, head_dim) packed over chunks given by ``cu_seq_lens_q`` (C+1,).
    Returns ((1, N, heads, head_dim), None), like transformers' attention functions."""
    if cu_seq_lens_q is None:  # a plain (unpacked) call: one chunk
        out = F.scaled_dot_product_attention(query, key, value, scale=scaling, is_causal=is_causal)
        return out.transpose(1, 2).contiguous(), None
    if cu_seq_lens_k is not None and not torch.equal(cu_seq_lens_q, cu_seq_lens_k):
        raise ValueError("grouped vision attention needs the same chunks for queries and keys")
    q, k, v = query[0], key[0], value[0]  # (H, N, D)
    starts = cu_seq_lens_q[:-1].tolist()
    lengths = (cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).tolist()
    groups: dict[int, list[int]] = {}
    for start, length in zip(starts, lengths):
        if length > 0:
            groups.setdefault(int(length), []).append(int(start))
    out = torch.empty_like(q)
    for length, group_starts in groups.items():
        idx = (torch.tensor(group_starts, device=q.device)[:, None]
               + torch.arange(length, device=q.device)[None, :]).reshape(-1)  # (G*L,)
        g = len(group_starts)

        def take(t):  # (H, N, D) -> (G, H, L, D)
            return t.index_select(1, idx).view(t.shape[0], g, length, t.shape[-1]).transpose(0, 1)

        o = F.scaled_dot_product_attention(take(q), take(k), take(v), scale=scaling,
                                           dropout_p=dropout, is_causal=is_causal)  # (G, H, L, D)
        out.index_copy_(1, idx, o.transpose(0, 1).reshape(q.shape[0], g * length, q.shape[-1]))
    return out.transpose(0, 1).unsqueeze(0).contiguous(), None


def enable_grouped_vision_attention(model) -> bool:
    """Switch the vision tower of a Qwen-VL model from per-chunk SDPA to grouped SDPA.
    Returns True when switched (the tower used SDPA or eager), False otherwise (e.g. flash-attn)."""
    from transformers import AttentionInterface

    visual = getattr(getattr(model, "model", model), "visual", None)
    if visual is None or not hasattr(visual, "config"):
        return False
    current = getattr(visual.config, "_attn_implementation", None)
    if current not in ("sdpa", "eager", None):
        return False
    AttentionInterface.register(ATTN_NAME, grouped_varlen_attention)
    visual.config._attn_implementation = ATTN_NAME
    return True
