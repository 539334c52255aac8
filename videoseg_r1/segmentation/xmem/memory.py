"""XMem's working and long-term memory: key/value stores, anisotropic L2 affinity with top-k readout,
usage counting, prototype consolidation and usage-based eviction (XMem paper §3.3-3.4).

Used by :class:`videoseg_r1.segmentation.xmem.inference.InferenceCore`, one ``MemoryManager`` per
propagation direction. All objects enter memory together on the key frame, so there is a single
object group (the official code keeps one value list per group for objects that appear later).

Layout (batch dimension dropped, L = memory elements, HW = h*w query positions, N objects):
keys (Ck, L) float32, shrinkage (1, L) float32, selection (Ck, L) float32 (working memory only),
values (L, N*Cv) in the network's dtype (rows, so a top-k readout is one ``embedding_bag``),
use_count / life_count (L,) float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from videoseg_r1.config import (XMEM_MAX_LONG_TERM_ELEMENTS, XMEM_MAX_MID_TERM_FRAMES, XMEM_MIN_MID_TERM_FRAMES,
                                XMEM_NUM_PROTOTYPES, XMEM_TOP_K)


@dataclass(frozen=True)
class MemoryConfig:
    """Memory sizes in frames / elements (official defaults, SPEC §1 stage 3)."""

    top_k: int = XMEM_TOP_K
    min_mid_term_frames: int = XMEM_MIN_MID_TERM_FRAMES
    max_mid_term_frames: int = XMEM_MAX_MID_TERM_FRAMES
    num_prototypes: int = XMEM_NUM_PROTOTYPES
    max_long_term_elements: int = XMEM_MAX_LONG_TERM_ELEMENTS
    enable_long_term: bool = True

    def __post_init__(self):
        if not 1 <= self.min_mid_term_frames < self.max_mid_term_frames:
            raise ValueError(f"need 1 <= min_mid_term_frames < max_mid_term_frames, got "
                             f"{self.min_mid_term_frames}, {self.max_mid_term_frames}")
        if self.num_prototypes >= self.max_long_term_elements:
            raise ValueError("num_prototypes must be smaller than max_long_term_elements")
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")


# ------------------------------------------------------------------------------------- affinity


def similarity(mem_key: torch.Tensor, mem_shrinkage: torch.Tensor | None, query_key: torch.Tensor,
               query_selection: torch.Tensor | None) -> torch.Tensor:
    """Anisotropic L2 similarity (XMem eq. 3): -sum_c e_c (k_c - q_c)^2 * s / sqrt(Ck).

    mem_key (Ck, L), mem_shrinkage (1, L), query_key (Ck, Q), query_selection (Ck, Q) -> (L, Q).
    Computed as one float32 matmul: [s*k^2, s*k, s] @ [-e; 2 e q; -sum e q^2] / sqrt(Ck).
    """
    ck = mem_key.shape[0]
    mk, qk = mem_key.float(), query_key.float()
    qe = torch.ones_like(qk) if query_selection is None else query_selection.float()
    mem_aug = torch.cat([mk.square(), mk, torch.ones_like(mk[:1])], 0)  # (2Ck+1, L)
    if mem_shrinkage is not None:
        mem_aug = mem_aug * mem_shrinkage.float()
    query_aug = torch.cat([-qe, 2 * qe * qk, -(qe * qk.square()).sum(0, keepdim=True)], 0)  # (2Ck+1, Q)
    return (mem_aug.transpose(0, 1) @ query_aug) / math.sqrt(ck)


def query_augment(query_key: torch.Tensor, query_selection: torch.Tensor) -> torch.Tensor:
    """The right matrix of :func:`similarity` for a batch of frames, transposed: query_key and
    query_selection (B, Ck, h, w) -> (B, h*w, 2Ck+1) float32. Depends on the frame alone, so it is
    computed with the keys of a batch of frames (one launch sequence per batch, not per frame)."""
    qk = query_key.float().flatten(2)
    qe = query_selection.float().flatten(2)
    aug = torch.cat([-qe, 2 * qe * qk, -(qe * qk.square()).sum(1, keepdim=True)], 1)  # (B, 2Ck+1, Q)
    return aug.transpose(1, 2).contiguous()


class _AffinityCache:
    """The left matrix of :func:`similarity` for the whole memory, rebuilt only when memory changes
    (every ``mem_every`` frames), so each frame costs one matmul."""

    def __init__(self, mem_key: torch.Tensor, mem_shrinkage: torch.Tensor):
        mk = mem_key.float()
        aug = torch.cat([mk.square(), mk, torch.ones_like(mk[:1])], 0) * mem_shrinkage.float()
        self.mem_aug_t = (aug / math.sqrt(mk.shape[0])).transpose(0, 1).contiguous()  # (L, 2Ck+1)

    def similarity_qt(self, query_key: torch.Tensor, query_selection: torch.Tensor) -> torch.Tensor:
        """-> (Q, L): row q holds the similarity of query position q to every memory element."""
        qk, qe = query_key.float(), query_selection.float()
        query_aug = torch.cat([-qe, 2 * qe * qk, -(qe * qk.square()).sum(0, keepdim=True)], 0)  # (2Ck+1, Q)
        return query_aug.transpose(0, 1) @ self.mem_aug_t.transpose(0, 1)

    def similarity_from_aug(self, query_aug_t: torch.Tensor) -> torch.Tensor:
        """query_aug_t (Q, 2Ck+1) from :func:`query_augment` -> (Q, L), as :meth:`similarity_qt`."""
        return query_aug_t @ self.mem_aug_t.transpose(0, 1)


def topk_softmax(sim_qt: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the top-k memory elements per query and softmax over them.

    sim_qt (Q, L) -> (indices (Q, k) int64, weights (Q, k) float32); k = min(top_k, L)."""
    values, indices = torch.topk(sim_qt, k=min(top_k, sim_qt.shape[1]), dim=1, sorted=False)
    return indices, torch.softmax(values, dim=1)


def sparse_readout(values: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the top-k memory rows per query without materialising the (L, Q) affinity.

    values (L, D), indices (Q, k), weights (Q, k) -> (Q, D) in ``values``' dtype. Equal to the
    official dense ``values^T @ affinity`` where the affinity is zero outside the top-k."""
    return F.embedding_bag(indices, values, per_sample_weights=weights.to(values.dtype), mode="sum")


def usage_of(indices: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """Total affinity each memory element received from all queries: (size,) float32."""
    return torch.zeros(size, device=weights.device, dtype=torch.float32).index_add_(
        0, indices.reshape(-1), weights.reshape(-1).float())


# ------------------------------------------------------------------------------------- stores


class KeyValueStore:
    """One memory (working or long-term): keys, shrinkage, optional selection, values, usage."""

    def __init__(self):
        self.key: torch.Tensor | None = None  # (Ck, L)
        self.shrinkage: torch.Tensor | None = None  # (1, L)
        self.selection: torch.Tensor | None = None  # (Ck, L)
        self.value: torch.Tensor | None = None  # (L, N*Cv)
        self.use_count: torch.Tensor | None = None  # (L,)
        self.life_count: torch.Tensor | None = None  # (L,)

    @property
    def size(self) -> int:
        return 0 if self.key is None else int(self.key.shape[1])

    def engaged(self) -> bool:
        return self.key is not None and self.size > 0

    def add(self, key: torch.Tensor, shrinkage: torch.Tensor, value: torch.Tensor,
            selection: torch.Tensor | None = None) -> None:
        """key (Ck, n), shrinkage (1, n), value (n, N*Cv), selection (Ck, n) or None."""
        n = key.shape[1]
        new_use = torch.zeros(n, device=key.device, dtype=torch.float32)
        new_life = torch.full((n,), 1e-7, device=key.device, dtype=torch.float32)  # official: avoids 0/0
        if self.key is None:
            self.key, self.shrinkage, self.selection, self.value = key, shrinkage, selection, value
            self.use_count, self.life_count = new_use, new_life
            return
        self.key = torch.cat([self.key, key], 1)
        self.shrinkage = torch.cat([self.shrinkage, shrinkage], 1)
        if self.selection is not None and selection is not None:
            self.selection = torch.cat([self.selection, selection], 1)
        self.value = torch.cat([self.value, value], 0)
        self.use_count = torch.cat([self.use_count, new_use])
        self.life_count = torch.cat([self.life_count, new_life])

    def update_usage(self, usage: torch.Tensor) -> None:
        """usage (L,): affinity received in this readout; every element ages by one readout."""
        self.use_count += usage
        self.life_count += 1

    def usage(self) -> torch.Tensor:
        """Normalised usage (L,): total affinity received / number of readouts lived."""
        return self.use_count / self.life_count

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the elements at ``index`` (1-D long, in the order given)."""
        self.key = self.key[:, index]
        self.shrinkage = self.shrinkage[:, index]
        if self.selection is not None:
            self.selection = self.selection[:, index]
        self.value = self.value[index]
        self.use_count = self.use_count[index]
        self.life_count = self.life_count[index]

    def remove_range(self, start: int, end: int) -> None:
        """Drop elements [start, end)."""
        dev = self.key.device  # made on the device: a host-made index would make the host wait for the GPU
        index = torch.cat([torch.arange(0, start, device=dev), torch.arange(end, self.size, device=dev)])
        self.keep(index)

    def remove_obsolete(self, max_size: int) -> None:
        """Usage-based eviction: keep the ``max_size`` most used elements (in their original order)."""
        if self.size <= max_size:
            return
        keep = torch.topk(self.usage(), k=max_size, sorted=False).indices.sort().values
        self.keep(keep)

    def clone(self) -> "KeyValueStore":
        out = KeyValueStore()
        for name in ("key", "shrinkage", "selection", "value", "use_count", "life_count"):
            t = getattr(self, name)
            setattr(out, name, None if t is None else t.clone())
        return out


# ------------------------------------------------------------------------------------- manager


class MemoryManager:
    """Working + long-term memory of one propagation direction.

    ``add`` appends a memory frame to working memory; when working memory reaches
    ``max_mid_term_frames`` frames, all but the first frame and the newest
    ``min_mid_term_frames - 1`` frames are consolidated into ``num_prototypes`` prototypes (the
    most used candidates, values/shrinkage re-read by softmax affinity) that move to long-term
    memory; long-term memory is first cut to ``max_long_term_elements - num_prototypes`` by usage.
    ``match`` reads both memories with top-k softmax and counts usage.
    """

    def __init__(self, config: MemoryConfig | None = None):
        self.config = config or MemoryConfig()
        self.work = KeyValueStore()
        self.long = KeyValueStore()
        self.hw: int | None = None  # memory elements per frame
        self._cache: _AffinityCache | None = None
        self._values: torch.Tensor | None = None  # cat(long.value, work.value)
        self.num_consolidations = 0

    # -- sizes in elements
    @property
    def min_work_elements(self) -> int:
        return self.config.min_mid_term_frames * self.hw

    @property
    def max_work_elements(self) -> int:
        return self.config.max_mid_term_frames * self.hw

    @property
    def size(self) -> int:
        return self.work.size + self.long.size

    def _invalidate(self) -> None:
        self._cache = None
        self._values = None

    def _combined(self) -> tuple[_AffinityCache, torch.Tensor]:
        if self._cache is None:
            if self.long.engaged():
                key = torch.cat([self.long.key, self.work.key], 1)
                shrink = torch.cat([self.long.shrinkage, self.work.shrinkage], 1)
                self._values = torch.cat([self.long.value, self.work.value], 0)
            else:
                key, shrink, self._values = self.work.key, self.work.shrinkage, self.work.value
            self._cache = _AffinityCache(key, shrink)
        return self._cache, self._values

    def match(self, query_key: torch.Tensor, query_selection: torch.Tensor, num_objects: int,
              query_aug: torch.Tensor | None = None) -> torch.Tensor:
        """Read memory for one frame.

        query_key (Ck, h, w), query_selection (Ck, h, w) -> readout (N, Cv, h, w) in the values' dtype
        (a permuted view of the (h*w, N*Cv) readout rows: channels-last for one object).
        ``query_aug`` (h*w, 2Ck+1): the frame's :func:`query_augment`, when already computed.
        Updates the usage counters of both memories."""
        if not self.work.engaged():
            raise RuntimeError("XMem memory is empty: the key frame must be added before reading")
        h, w = query_key.shape[-2:]
        cache, values = self._combined()
        if query_aug is not None:
            sim = cache.similarity_from_aug(query_aug)  # (HW, L)
        else:
            sim = cache.similarity_qt(query_key.reshape(query_key.shape[0], -1),
                                      query_selection.reshape(query_selection.shape[0], -1))
        indices, weights = topk_softmax(sim, self.config.top_k)
        readout = sparse_readout(values, indices, weights)  # (HW, N*Cv)
        if self.config.enable_long_term:
            usage = usage_of(indices, weights, sim.shape[1])
            n_long = self.long.size
            if n_long:
                self.long.update_usage(usage[:n_long])
            self.work.update_usage(usage[n_long:])
        return readout.view(h, w, num_objects, -1).permute(2, 3, 0, 1)

    def add(self, key: torch.Tensor, shrinkage: torch.Tensor, value: torch.Tensor,
            selection: torch.Tensor | None) -> None:
        """Add one memory frame: key (Ck, h, w), shrinkage (1, h, w), value (N, Cv, h, w),
        selection (Ck, h, w). May trigger consolidation into long-term memory."""
        h, w = key.shape[-2:]
        if self.hw is None:
            self.hw = h * w
        elif self.hw != h * w:
            raise ValueError(f"memory frame size changed from {self.hw} to {h * w} elements")
        n = value.shape[0]
        self.work.add(key.reshape(key.shape[0], -1).float(), shrinkage.reshape(1, -1).float(),
                      value.reshape(n * value.shape[1], -1).transpose(0, 1).contiguous(),
                      None if selection is None else selection.reshape(selection.shape[0], -1).float())
        self._invalidate()
        if self.config.enable_long_term and self.work.size >= self.max_work_elements:
            limit = self.config.max_long_term_elements - self.config.num_prototypes
            if self.long.size >= limit:
                self.long.remove_obsolete(limit)
            self.consolidate()

    def consolidate(self) -> None:
        """Move the middle of working memory into long-term memory as prototypes (XMem §3.4)."""
        hw, size = self.hw, self.work.size
        start, end = hw, size - self.min_work_elements + hw  # keep the first frame and the newest frames
        if end <= start:
            return
        cand_key = self.work.key[:, start:end]
        cand_shrink = self.work.shrinkage[:, start:end]
        cand_sel = None if self.work.selection is None else self.work.selection[:, start:end]
        cand_value = self.work.value[start:end]
        usage = self.work.usage()[start:end]
        num_proto = min(self.config.num_prototypes, end - start)
        proto_idx = torch.topk(usage, k=num_proto, sorted=True).indices
        proto_key = cand_key[:, proto_idx]
        proto_sel = None if cand_sel is None else cand_sel[:, proto_idx]
        # potentiation: prototypes read values and shrinkage from all candidates (full softmax)
        # softmax over the candidates, computed on the transposed (P, Ncand) matrix: CUDA's softmax over
        # dim 0 of a (Ncand, P) matrix took ~4.5 ms per consolidation here, over the last dim ~20 us
        affinity_t = torch.softmax(similarity(cand_key, cand_shrink, proto_key, proto_sel).transpose(0, 1), dim=1)
        proto_value = (affinity_t @ cand_value.float()).to(cand_value.dtype)  # (P, N*Cv)
        proto_shrink = (affinity_t @ cand_shrink.transpose(0, 1)).transpose(0, 1)  # (1, P)
        self.work.remove_range(start, end)
        self.long.add(proto_key, proto_shrink, proto_value, selection=None)
        self.num_consolidations += 1
        self._invalidate()

    def clone(self) -> "MemoryManager":
        out = MemoryManager(self.config)
        out.work, out.long, out.hw = self.work.clone(), self.long.clone(), self.hw
        out.num_consolidations = self.num_consolidations
        return out
