"""CUDA-graph replay of the fixed-shape parts of the XMem loop (key encoder, value encoder, decoder).

The XMem loop is bound by host work, not by the GPU: one frame launches ~150 small kernels (decoder,
soft aggregation, sensory update) whose launch costs exceed their run time. These parts have the
same shapes on every frame of a video, so each is captured once per input signature (shapes, dtypes,
strides and the non-tensor arguments) as a CUDA graph and replayed: one launch instead of ~150.
The memory readout (whose size grows with the memory) stays eager.

:class:`GraphedCallable` wraps a function of tensors (and ``None`` / hashable flags) that returns a
tensor, ``None`` or a tuple of them. Each call copies the arguments into the graph's static input
buffers, replays, and returns clones of the static outputs, so callers may keep results across calls
exactly as with the eager function. With ``enabled=False``, on CPU tensors, or after a failed
capture (logged once) it simply calls the function. ``capture=False`` runs the function eagerly on
the static buffers (the same copy-in / copy-out path without a graph): the CPU tests use it.

Used by :class:`videoseg_r1.segmentation.xmem.inference.InferenceCore` when ``cuda_graphs`` is on
(the propagator turns it on on CUDA).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)


def _signature(args: tuple) -> tuple:
    sig = []
    for a in args:
        if isinstance(a, torch.Tensor):
            sig.append(("T", tuple(a.shape), a.dtype, tuple(a.stride()), a.device))
        elif a is None:
            sig.append(("N",))
        else:
            sig.append(("S", a))
    return tuple(sig)


def _map(out: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (tuple, list)):
        return type(out)(_map(o, fn) for o in out)
    return out


@dataclass
class _Entry:
    inputs: tuple
    outputs: Any
    graph: Any  # torch.cuda.CUDAGraph, or None when capture=False


class GraphedCallable:
    """``fn(*args)`` replayed from CUDA graphs, one per argument signature (at most ``max_graphs``,
    least recently used dropped first). Tensor arguments must live on one CUDA device."""

    def __init__(self, fn: Callable, name: str = "", *, enabled: bool = True, capture: bool = True,
                 warmup: int = 2, max_graphs: int = 8, clone_outputs: bool = True):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "fn")
        self.enabled = enabled
        self.capture = capture
        self.warmup = max(1, warmup)
        self.max_graphs = max(1, max_graphs)
        self.clone_outputs = clone_outputs
        self.failed = False
        self.entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self.replays = 0

    def _usable(self, args: tuple) -> bool:
        if not self.enabled or self.failed:
            return False
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors:
            return False
        if self.capture:
            return all(t.is_cuda for t in tensors) and torch.cuda.is_available()
        return True

    def _build(self, args: tuple) -> _Entry:
        inputs = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        if not self.capture:
            return _Entry(inputs, None, None)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up: cudnn autotuning, lazy init, workspaces
            for _ in range(self.warmup):
                self.fn(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.fn(*inputs)
        return _Entry(inputs, outputs, graph)

    def __call__(self, *args):
        if not self._usable(args):
            return self.fn(*args)
        key = _signature(args)
        entry = self.entries.get(key)
        if entry is None:
            try:
                entry = self._build(args)
            except Exception as exc:  # capture unsupported here: stay eager from now on
                self.failed = True
                self.entries.clear()
                log.warning("CUDA graph capture of %s failed (%s: %s); running it eagerly",
                            self.name, type(exc).__name__, exc)
                return self.fn(*args)
            self.entries[key] = entry
            while len(self.entries) > self.max_graphs:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        for static, a in zip(entry.inputs, args):
            if isinstance(a, torch.Tensor) and a is not static:
                static.copy_(a)
        if entry.graph is None:
            outputs = self.fn(*entry.inputs)
        else:
            entry.graph.replay()
            outputs = entry.outputs
        self.replays += 1
        return _map(outputs, torch.Tensor.clone) if self.clone_outputs else outputs

    def reset(self) -> None:
        """Drop every captured graph (and its memory)."""
        self.entries.clear()
        self.failed = False
