"""Fast decoding for the reasoner's vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

``Reasoner`` (``reasoner.py``) calls :meth:`DecodeEngine.generate` instead of transformers'
``generate`` on CUDA; ``benchmarks/bench_decode.py`` measures it and ``tests/test_decode.py`` checks
it against ``generate`` on the CPU.

How one call runs:

1. **Prefill** with the model's own forward (vision encoder or pre-encoded ``mm_encoder_outputs``,
   multimodal RoPE positions computed exactly as ``generate`` computes them), batch B prompts.
2. The prompt KV cache is copied once into a preallocated **shared prefix** buffer
   (B, kv_heads, L, head_dim); it is *not* repeated for the K samples of a prompt. Each of the
   R = B*K rows gets its own **suffix** buffer for the generated tokens, laid out
   (B, kv_heads, K, N, head_dim). Attention of a decode step reads the prefix once per prompt for
   all K rows (their queries are stacked), the suffix per row, and merges both in one softmax.
3. **Decode** with a step function over the text model only: embed -> layers -> norm -> lm_head,
   for one token per row. After the prompt the three multimodal RoPE sections advance together:
   the token generated j-th sits at position ``p_last + 1 + j`` in each section, ``p_last`` being
   the prompt's last real token's position in that section (what ``generate`` of transformers 5.x
   does; note that with videos ``p_last + 1`` can be below ``rope_deltas + length``, which
   ``forward`` alone would use). On CUDA the step is captured once as a CUDA graph per buffer
   shape (B, K, prompt capacity, new-token capacity; capacities rounded up to 256 / 64 tokens)
   and replayed per token; on the CPU the same step runs eagerly. ``fuse=True`` additionally
   compiles the step's elementwise parts (RMSNorm, RoPE, softmax, SiLU) with ``torch.compile``.
4. Token choice (greedy, temperature, top-k, top-p, repetition penalty, suppressed ids, min new
   tokens) runs eagerly on the step's float32 logits; the chosen ids go to the host one step behind
   the GPU (no pipeline stall) where per-row stops are decided: EOS ids, stop token sequences,
   stop strings (with a tokenizer). A row stops at its first stop; the loop ends when all rows
   stopped or ``max_new_tokens`` is reached.

Log-likelihood (``DecodeOutput.log_likelihoods``): for each row, the sum over its generated tokens
(the stop token included, nothing after it) of ``log_softmax(raw_logits)[token]``, where
``raw_logits`` are the model's logits before any processing (temperature 1; no top-k/top-p,
repetition penalty, suppression or min-new-tokens masking). It equals the sum of
``model.compute_transition_scores(out.sequences, out.logits, normalize_logits=True)`` over the same
tokens for ``generate(..., output_logits=True, return_dict_in_generate=True)``.

Models the engine does not support (other architectures, sliding-window or dynamic RoPE, MoE
text layers, quantized or patched linear layers, a model spread over several devices) are named by
:func:`unsupported_reason`; :class:`DecodeEngine` raises :class:`UnsupportedModelError` for them
and the caller falls back to ``generate``.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# Keys of the processor output (or of the reasoner's forward kwargs) that the prefill forward takes.
MODEL_INPUT_KEYS = (
    "pixel_values",
    "pixel_values_videos",
    "image_grid_thw",
    "video_grid_thw",
    "second_per_grid_ts",
    "mm_token_type_ids",
    "mm_encoder_outputs",
)
PREFIX_BUCKET = 256  # prompt capacity of a captured graph is rounded up to this many tokens
SUFFIX_BUCKET = 64  # generated-token capacity likewise
MAX_CACHED_GRAPHS = 6  # CUDA graphs kept (LRU); each costs only its small activation pool


class UnsupportedModelError(RuntimeError):
    """The model cannot run on the decode engine; the message says why. Fall back to ``generate``."""


# ============================================================== support check


def _text_config(config):
    return getattr(config, "text_config", None) or config


def _language_model(model):
    base = getattr(model, "model", None)
    return getattr(base, "language_model", None)


def unsupported_reason(model) -> str | None:
    """Why ``model`` cannot use the decode engine, or None when it can."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {SUPPORTED_MODEL_TYPES}"
    lm = _language_model(model)
    if lm is None or not hasattr(model, "lm_head"):
        return "expected model.model.language_model and model.lm_head (transformers >= 5 layout)"
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(lm, name):
            return f"text model has no {name!r}"
    tc = _text_config(config)
    layer_types = getattr(tc, "layer_types", None) or ["full_attention"]
    if any(t != "full_attention" for t in layer_types):
        return "sliding-window attention layers are not supported"
    rope_type = str(getattr(lm.rotary_emb, "rope_type", "default"))
    if "dynamic" in rope_type or rope_type == "longrope":
        return f"RoPE type {rope_type!r} changes with the sequence length"
    if type(model.lm_head) is not nn.Linear:
        return "lm_head is not a plain nn.Linear (quantized or patched)"
    for i, layer in enumerate(lm.layers):
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None:
            return f"layer {i} has no self_attn/mlp"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if type(getattr(attn, name, None)) is not nn.Linear:
                return f"layer {i} self_attn.{name} is not a plain nn.Linear (quantized, patched or missing)"
        for name in ("gate_proj", "up_proj", "down_proj"):
            if type(getattr(mlp, name, None)) is not nn.Linear:
                return f"layer {i} mlp.{name} is not a plain nn.Linear (mixture of experts or quantized)"
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
        norms += [m for m in (getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)) if m is not None]
        for m in norms:
            if not (hasattr(m, "weight") and hasattr(m, "variance_epsilon")):
                return f"layer {i} has a norm that is not an RMSNorm"
    if not isinstance(lm.norm.weight, torch.Tensor) or not hasattr(lm.norm, "variance_epsilon"):
        return "final norm is not an RMSNorm"
    devices = {p.device for p in lm.parameters()} | {model.lm_head.weight.device}
    if len(devices) != 1:
        return f"text model is spread over several devices {sorted(map(str, devices))}"
    dtypes = {p.dtype for p in lm.parameters()}
    if len(dtypes) != 1:
        return f"text model mixes dtypes {sorted(map(str, dtypes))}"
    return None


# ============================================================== outputs


@dataclass
class DecodeOutput:
    """Result of one :meth:`DecodeEngine.generate` call.

    Rows are ordered prompt-major: row ``r = b * num_samples + k`` is sample k of prompt b (the
    order of ``generate(..., num_return_sequences=K)``).

    ``token_ids[r]``: the generated ids through the row's stop token (EOS id or the last token of
    a stop sequence / stop string), nothing after it; for a row that hit ``max_new_tokens`` all of
    them. ``token_logprobs[r][i]`` = log p(token_ids[r][i]) under the raw softmax; their sum is
    ``log_likelihoods[r]``. ``num_tokens[r] == len(token_ids[r])``. ``finish_reasons[r]`` is
    "eos", "stop" or "length".
    """

    token_ids: list[list[int]]
    log_likelihoods: list[float]
    token_logprobs: list[list[float]]
    num_tokens: list[int]
    finish_reasons: list[str]
    num_prompts: int
    num_samples: int
    prompt_tokens: int  # padded prompt length L
    decode_steps: int  # model decode steps run (the first token comes from the prefill)
    prefill_s: float
    decode_s: float
    cache_bytes: int  # KV bytes this call used: prefix (B*L_cap) + suffix (R*N_cap) tokens
    cache_reserved_bytes: int  # KV buffers the engine holds (reused by later calls)
    used_cuda_graph: bool
    eos_token_ids: tuple[int, ...] = ()

    def rows(self, prompt_index: int) -> range:
        """Row indices of the samples of one prompt."""
        return range(prompt_index * self.num_samples, (prompt_index + 1) * self.num_samples)

    def text_token_ids(self, r: int) -> list[int]:
        """``token_ids[r]`` without a final EOS id (ready for ``tokenizer.decode``)."""
        ids = self.token_ids[r]
        if ids and self.finish_reasons[r] == "eos" and ids[-1] in self.eos_token_ids:
            return ids[:-1]
        return list(ids)

    def texts(self, tokenizer, skip_special_tokens: bool = True) -> list[str]:
        return [tokenizer.decode(self.text_token_ids(r), skip_special_tokens=skip_special_tokens)
                for r in range(len(self.token_ids))]

    @property
    def new_tokens(self) -> int:
        return sum(self.num_tokens)

    @property
    def decode_tokens_per_s(self) -> float:
        """Generated tokens per second of decode time, summed over rows."""
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0


# ============================================================== token choice


def sample_next_tokens(
    logits: torch.Tensor,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    banned: torch.Tensor | None = None,
    seen: torch.Tensor | None = None,
    repetition_penalty: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose one token per row; return (ids (R,), log p(id) under the raw softmax (R,)).

    ``logits`` (R, V) float32, unprocessed. Processing order is ``generate``'s: repetition penalty
    (on ids where ``seen`` (R, V) is True), banned ids (bool (V,) or (R, V)) set to -inf, then for
    sampling temperature, top-k, top-p (keep the smallest set of most likely tokens whose
    probability reaches ``top_p``; at least one). Sampling draws ``argmax(p / E)`` with
    E ~ Exponential(1), i.e. exactly ``p``, without a host sync.
    """
    logprobs = torch.log_softmax(logits, dim=-1)
    scores = logits
    if seen is not None and repetition_penalty != 1.0:
        penalized = torch.where(scores < 0, scores * repetition_penalty, scores / repetition_penalty)
        scores = torch.where(seen, penalized, scores)
    if banned is not None:
        scores = scores.masked_fill(banned, -math.inf)
    if not do_sample:
        ids = scores.argmax(dim=-1)
    else:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if temperature != 1.0:
            scores = scores / temperature
        if top_k and 0 < top_k < scores.shape[-1]:
            kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if top_p < 1.0:
            sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
            sorted_probs = torch.softmax(sorted_scores, dim=-1)
            mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
            drop = mass_before >= top_p
            drop[:, 0] = False
            scores = scores.scatter(-1, order, sorted_scores.masked_fill(drop, -math.inf))
        probs = torch.softmax(scores, dim=-1)
        noise = torch.empty_like(probs).exponential_(generator=generator)
        ids = (probs / noise).argmax(dim=-1)
    return ids, logprobs.gather(-1, ids[:, None]).squeeze(-1)


# ============================================================== the decode step


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Same arithmetic as the Qwen RMSNorm modules (float32 statistics, cast, then weight)."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _rope_qk(q, k, cos, sin):
    return _rope(q, cos, sin), _rope(k, cos, sin)


def _attn_probs(s_pre, s_suf, bias, scaling: float, dtype: torch.dtype):
    """One softmax over prefix and suffix scores (float32), probabilities cast to the model dtype."""
    return torch.softmax(torch.add(bias, torch.cat((s_pre, s_suf), dim=-1), alpha=scaling), dim=-1).to(dtype)


def _attn_merge(o_pre, o_suf, dtype: torch.dtype):
    """(B, Hkv, K, G, D) prefix + suffix outputs -> rows (B*K, Hkv*G*D) in the model dtype."""
    B, Hkv, K, G, D = o_suf.shape
    return (o_pre + o_suf).to(dtype).transpose(1, 2).reshape(B * K, Hkv * G * D)


def _silu_mul(g, u):
    return F.silu(g) * u


class _Ops:
    """The elementwise pieces of the step, fused by ``torch.compile`` when ``fuse`` is set.

    Without fusion each piece is several small kernels; in a CUDA graph their launch gaps, not the
    weight reads, become a large part of a 7B decode step.
    """

    def __init__(self, fuse: bool):
        self.fused = bool(fuse)
        fns = dict(rms=_rms_norm, rope_qk=_rope_qk, probs=_attn_probs, merge=_attn_merge, silu_mul=_silu_mul)
        for name, fn in fns.items():
            setattr(self, name, torch.compile(fn, fullgraph=True) if fuse else fn)


def _round_up(n: int, m: int) -> int:
    return max(m, -(-n // m) * m)


class _LayerWeights:
    __slots__ = ("ln1", "ln1_eps", "ln2", "ln2_eps", "q", "qb", "k", "kb", "v", "vb", "o", "ob",
                 "qn", "qn_eps", "kn", "kn_eps", "gate", "up", "down", "act")

    def __init__(self, layer, silu: bool):
        attn, mlp = layer.self_attn, layer.mlp
        self.ln1, self.ln1_eps = layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon
        self.ln2, self.ln2_eps = layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon
        self.q, self.qb = attn.q_proj.weight, attn.q_proj.bias
        self.k, self.kb = attn.k_proj.weight, attn.k_proj.bias
        self.v, self.vb = attn.v_proj.weight, attn.v_proj.bias
        self.o, self.ob = attn.o_proj.weight, attn.o_proj.bias
        qn, kn = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        self.qn, self.qn_eps = (qn.weight, qn.variance_epsilon) if qn is not None else (None, 0.0)
        self.kn, self.kn_eps = (kn.weight, kn.variance_epsilon) if kn is not None else (None, 0.0)
        self.gate, self.up, self.down = mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight
        self.act = F.silu if silu else mlp.act_fn


class _Step:
    """Static buffers and the one-token decode step for a shape (B prompts, K samples, L_cap, N_cap).

    Inputs written before each step: ``tok`` (R,) ids to feed; set once per call: ``base_pos``
    (3, R) the RoPE position of the first generated token, ``slot`` (1,) = 0, ``prefix_bias``
    (B, 1, 1, L_cap) 0 for real prompt tokens and -inf for padding/unused capacity, and the prefix
    KV. The step writes the fed token's K/V at suffix index ``slot``, attends, returns logits
    (R, V) and advances ``slot`` by one.
    """

    def __init__(self, eng: "DecodeEngine", B: int, K: int, L_cap: int, N_cap: int):
        dev = eng.device
        self.eng, self.B, self.K, self.L_cap, self.N_cap = eng, B, K, L_cap, N_cap
        self.R = R = B * K
        self.tok = torch.zeros(R, dtype=torch.long, device=dev)
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)
        self.base_pos = torch.zeros(3, R, dtype=torch.long, device=dev)
        self.prefix_bias = torch.full((B, 1, 1, L_cap), -math.inf, dtype=torch.float32, device=dev)
        self.arange_n = torch.arange(N_cap, device=dev)
        self.zeros_n = torch.zeros(N_cap, dtype=torch.float32, device=dev)
        Hkv, D = eng.num_kv_heads, eng.head_dim
        n_pre, n_suf = B * Hkv * L_cap * D, R * Hkv * N_cap * D
        self.kv = []
        for pk, pv, sk, sv in eng._storage:
            self.kv.append((pk[:n_pre].view(B, Hkv, L_cap, D), pv[:n_pre].view(B, Hkv, L_cap, D),
                            sk[:n_suf].view(B, Hkv, K, N_cap, D), sv[:n_suf].view(B, Hkv, K, N_cap, D)))
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_logits: torch.Tensor | None = None

    # ---------------------------------------------------------------- math
    def forward(self) -> torch.Tensor:
        eng = self.eng
        B, K, R = self.B, self.K, self.R
        Hq, Hkv, D, G = eng.num_heads, eng.num_kv_heads, eng.head_dim, eng.num_heads // eng.num_kv_heads
        lm = eng.lm
        x = lm.embed_tokens(self.tok)  # (R, H)
        pos = (self.base_pos + self.slot).unsqueeze(-1)  # (3, R, 1)
        cos, sin = lm.rotary_emb(x, pos)  # (R, 1, D)
        suffix_bias = self.zeros_n.masked_fill(self.arange_n > self.slot, -math.inf).view(1, 1, 1, self.N_cap)
        bias = torch.cat((self.prefix_bias, suffix_bias.expand(B, 1, 1, self.N_cap)), dim=-1)  # (B,1,1,L+N)
        ops, dtype = eng.ops, x.dtype
        for w, (k_pre, v_pre, k_suf, v_suf) in zip(eng.weights, self.kv):
            h = ops.rms(x, w.ln1, w.ln1_eps)
            q = F.linear(h, w.q, w.qb).view(R, Hq, D)
            k = F.linear(h, w.k, w.kb).view(R, Hkv, D)
            v = F.linear(h, w.v, w.vb).view(R, Hkv, D)
            if w.qn is not None:
                q = ops.rms(q, w.qn, w.qn_eps)
                k = ops.rms(k, w.kn, w.kn_eps)
            q, k = ops.rope_qk(q, k, cos, sin)
            # new K/V at suffix index `slot`: (R, Hkv, D) -> (B, Hkv, K, 1, D)
            k_suf.index_copy_(3, self.slot, k.view(B, K, Hkv, 1, D).transpose(1, 2))
            v_suf.index_copy_(3, self.slot, v.view(B, K, Hkv, 1, D).transpose(1, 2))
            # queries of the K rows of a prompt side by side: (B, Hkv, K, G, D)
            qg = q.view(B, K, Hkv, G, D).transpose(1, 2).contiguous()
            s_pre = eng._mm_f32(qg.view(B, Hkv, K * G, D), k_pre.transpose(-1, -2))  # (B, Hkv, K*G, L)
            s_suf = eng._mm_f32(qg, k_suf.transpose(-1, -2)).view(B, Hkv, K * G, self.N_cap)
            p = ops.probs(s_pre, s_suf, bias, eng.scaling, dtype)
            p_pre, p_suf = p.split((self.L_cap, self.N_cap), dim=-1)
            o_pre = eng._mm_f32(p_pre, v_pre).view(B, Hkv, K, G, D)
            o_suf = eng._mm_f32(p_suf.reshape(B, Hkv, K, G, self.N_cap), v_suf)
            o = ops.merge(o_pre, o_suf, dtype)  # (R, Hq*D)
            x = x + F.linear(o, w.o, w.ob)
            h = ops.rms(x, w.ln2, w.ln2_eps)
            g, u = F.linear(h, w.gate), F.linear(h, w.up)
            act = ops.silu_mul(g, u) if w.act is F.silu else w.act(g) * u
            x = x + F.linear(act, w.down)
        x = ops.rms(x, eng.final_norm, eng.final_norm_eps)
        logits = F.linear(x, eng.lm_head.weight, eng.lm_head.bias).float()
        self.slot.add_(1)
        return logits

    # ---------------------------------------------------------------- CUDA graph
    def capture(self) -> None:
        """Record the step once (after two warm-up runs on a side stream, as CUDA graphs need)."""
        stream = torch.cuda.Stream(device=self.eng.device)
        stream.wait_stream(torch.cuda.current_stream(self.eng.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.forward()
        torch.cuda.current_stream(self.eng.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.forward()
        self.graph, self.graph_logits = graph, out
        self.slot.zero_()

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
            return self.graph_logits
        return self.forward()


# ============================================================== the engine


class DecodeEngine:
    """Shared-prefix, static-cache, CUDA-graph decoding for a loaded Qwen-VL model.

    >>> engine = DecodeEngine(model)                                    # doctest: +SKIP
    >>> out = engine.generate(**processor_outputs, num_samples=5, do_sample=True, seed=0,
    ...                       max_new_tokens=64, stop_strings=["</answer>"], tokenizer=tok)  # doctest: +SKIP
    >>> out.texts(tok), out.log_likelihoods, out.num_tokens             # doctest: +SKIP

    ``use_cuda_graph``: None = on when the model is on CUDA. ``fuse``: compile the step's
    elementwise pieces with ``torch.compile`` (fewer kernels per step; compiles on the first call of
    each shape). The engine keeps its KV buffers and
    captured graphs between calls (``release()`` frees them). Not thread-safe: one call at a time.
    """

    def __init__(self, model, *, use_cuda_graph: bool | None = None, fuse: bool = False,
                 prefix_bucket: int = PREFIX_BUCKET, suffix_bucket: int = SUFFIX_BUCKET,
                 max_cached_graphs: int = MAX_CACHED_GRAPHS):
        reason = unsupported_reason(model)
        if reason is not None:
            raise UnsupportedModelError(f"decode engine cannot run this model: {reason}; use generate")
        self.model = model
        self.lm = _language_model(model)
        self.lm_head = model.lm_head
        tc = _text_config(model.config)
        attn0 = self.lm.layers[0].self_attn
        self.num_heads = int(tc.num_attention_heads)
        self.num_kv_heads = int(tc.num_key_value_heads or tc.num_attention_heads)
        self.head_dim = int(getattr(attn0, "head_dim", None) or tc.hidden_size // tc.num_attention_heads)
        self.scaling = float(getattr(attn0, "scaling", self.head_dim ** -0.5))
        self.num_layers = len(self.lm.layers)
        silu = getattr(tc, "hidden_act", None) == "silu"
        self.weights = [_LayerWeights(layer, silu) for layer in self.lm.layers]
        self.final_norm, self.final_norm_eps = self.lm.norm.weight, self.lm.norm.variance_epsilon
        self.device = self.lm_head.weight.device
        self.dtype = self.lm_head.weight.dtype
        if use_cuda_graph is None:
            use_cuda_graph = self.device.type == "cuda"
        if use_cuda_graph and self.device.type != "cuda":
            raise ValueError("use_cuda_graph=True needs the model on a CUDA device")
        self.use_cuda_graph = bool(use_cuda_graph)
        self.ops = _Ops(fuse)
        self.prefix_bucket, self.suffix_bucket = int(prefix_bucket), int(suffix_bucket)
        self.max_cached_graphs = int(max_cached_graphs)
        self._graphs: OrderedDict[tuple[int, int, int, int], _Step] = OrderedDict()
        self._storage: list[tuple[torch.Tensor, ...]] = []
        self._cap_pre = self._cap_suf = 0
        self._f32_out = self._probe_f32_matmul()
        self._fwd_params = set(inspect.signature(model.model.forward).parameters)
        gc = getattr(model, "generation_config", None)
        eos = getattr(gc, "eos_token_id", None)
        if eos is None:
            eos = getattr(tc, "eos_token_id", None)
        self.default_eos_ids = tuple(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))

    # ---------------------------------------------------------------- helpers
    def _probe_f32_matmul(self) -> bool:
        """bf16/fp16 attention scores accumulate and stay in float32 where torch can (CUDA)."""
        if self.dtype == torch.float32 or self.device.type != "cuda":
            return False
        try:
            # operands shaped like the step's: a row-strided slice and a transposed matrix
            a = torch.ones(2, 3, 8, dtype=self.dtype, device=self.device)[..., :4]
            b = torch.ones(2, 5, 4, dtype=self.dtype, device=self.device).transpose(1, 2)
            out = torch.bmm(a, b, out_dtype=torch.float32)
            return out.dtype == torch.float32 and bool((out == 4).all())
        except (TypeError, RuntimeError, NotImplementedError):
            return False

    def _mm_f32(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Batched ``a @ b`` over matching leading dims, result in float32."""
        if not self._f32_out:
            return torch.matmul(a, b).float() if a.dtype != torch.float32 else torch.matmul(a.float(), b.float())
        lead = a.shape[:-2]
        a3 = a.reshape(-1, *a.shape[-2:])
        b3 = b.reshape(-1, *b.shape[-2:])
        return torch.bmm(a3, b3, out_dtype=torch.float32).view(*lead, a.shape[-2], b.shape[-1])

    @property
    def bytes_per_token(self) -> int:
        """KV bytes one token of one row takes (all layers, K and V)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    def release(self) -> None:
        """Free the KV buffers and captured graphs (the next call allocates again)."""
        self._graphs.clear()
        self._storage = []
        self._cap_pre = self._cap_suf = 0

    def _ensure_storage(self, n_pre: int, n_suf: int) -> None:
        if n_pre <= self._cap_pre and n_suf <= self._cap_suf:
            return
        # Grow with headroom; graphs point into the old buffers, so they go too.
        self._graphs.clear()
        self._storage = []
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self._cap_pre = max(n_pre, int(self._cap_pre * 1.25))
        self._cap_suf = max(n_suf, int(self._cap_suf * 1.25))
        z = dict(dtype=self.dtype, device=self.device)
        self._storage = [(torch.zeros(self._cap_pre, **z), torch.zeros(self._cap_pre, **z),
                          torch.zeros(self._cap_suf, **z), torch.zeros(self._cap_suf, **z))
                         for _ in range(self.num_layers)]

    def _get_step(self, B: int, K: int, L_cap: int, N_cap: int) -> _Step:
        key = (B, K, L_cap, N_cap)
        step = self._graphs.get(key)
        if step is not None:
            self._graphs.move_to_end(key)
            return step
        unit = self.num_kv_heads * self.head_dim
        self._ensure_storage(B * L_cap * unit, B * K * N_cap * unit)
        step = _Step(self, B, K, L_cap, N_cap)
        self._prepare(step)
        self._graphs[key] = step
        while len(self._graphs) > self.max_cached_graphs:
            self._graphs.popitem(last=False)
        return step

    def _prepare(self, step: _Step) -> None:
        """Capture the graph (CUDA) or run the step once (fused ops compile there).

        A failure of the compiled ops falls back to the plain ops, a failed capture to the eager
        step; both are logged (the output stays the same, only slower; ``used_cuda_graph`` says).
        """
        for attempt in ("as configured", "without fusion"):
            try:
                if self.use_cuda_graph:
                    step.capture()
                elif self.ops.fused:
                    step.forward()
                    step.slot.zero_()
                return
            except Exception as exc:  # noqa: BLE001 - any compile/capture error means: degrade
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                step.graph = step.graph_logits = None
                step.slot.zero_()
                if self.ops.fused:
                    log.warning("decode engine: fused ops failed (%s: %s); using plain ops",
                                type(exc).__name__, exc)
                    self.ops = _Ops(False)
                    continue
                log.warning("decode engine: CUDA graph capture failed (%s: %s); decoding eagerly",
                            type(exc).__name__, exc)
                return

    # ---------------------------------------------------------------- prefill
    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs: dict):
        """Run the multimodal prompt; return (cache, hidden of last real token (B, H), next positions (3, B))."""
        model = self.model
        kwargs = {k: v for k, v in inputs.items() if v is not None}
        if "mm_token_type_ids" not in kwargs and (
                kwargs.get("image_grid_thw") is not None or kwargs.get("video_grid_thw") is not None):
            kwargs["mm_token_type_ids"] = self._mm_token_types(input_ids)
        if hasattr(model.model, "rope_deltas"):
            model.model.rope_deltas = None  # never reuse another prompt's deltas
        pos_kwargs = dict(kwargs, attention_mask=attention_mask)
        if hasattr(model, "_prepare_position_ids_for_generation"):
            # exactly the positions generate() builds: (4, B, L) = text row + 3 mrope rows
            position_ids = model._prepare_position_ids_for_generation(input_ids, pos_kwargs)
        else:  # pragma: no cover - older transformers
            position_ids, _ = model.model.get_rope_index(input_ids, attention_mask=attention_mask, **kwargs)
        fwd = {k: v for k, v in kwargs.items() if k in self._fwd_params}
        out = model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=True, **fwd)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        B, L = input_ids.shape
        last = (L - 1) - attention_mask.flip(-1).to(torch.long).argmax(-1)  # last real token per row
        rows = torch.arange(B, device=input_ids.device)
        hidden = out.last_hidden_state[rows, last]
        mrope = position_ids[-3:] if position_ids.dim() == 3 else position_ids[None].expand(3, -1, -1)
        next_pos = mrope[:, rows, last] + 1
        return cache, hidden, next_pos

    def _mm_token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        types = torch.zeros_like(input_ids, dtype=torch.int32)
        image_id, video_id = getattr(cfg, "image_token_id", None), getattr(cfg, "video_token_id", None)
        if image_id is not None:
            types[input_ids == image_id] = 1
        if video_id is not None:
            types[input_ids == video_id] = 2
        return types

    @staticmethod
    def _cache_layer(cache, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(cache, "layers"):
            return cache.layers[i].keys, cache.layers[i].values
        return cache.key_cache[i], cache.value_cache[i]  # pragma: no cover - older transformers

    # ---------------------------------------------------------------- generate
    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        num_samples: int = 1,
        max_new_tokens: int = 128,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        stop_token_sequences: Iterable[Sequence[int]] = (),
        stop_strings: Iterable[str] = (),
        tokenizer: Any = None,
        suppress_token_ids: Iterable[int] = (),
        **model_inputs: Any,
    ) -> DecodeOutput:
        """Generate ``num_samples`` continuations for each of the B prompts in ``input_ids`` (B, L).

        ``model_inputs``: the rest of the processor output / forward kwargs (``pixel_values``,
        ``pixel_values_videos``, ``image_grid_thw``, ``video_grid_thw``, ``second_per_grid_ts``,
        ``mm_token_type_ids`` (derived from the placeholder ids when missing), or
        ``mm_encoder_outputs`` instead of pixels). Several prompts must be padded; any padding side
        works (left padding is what ``generate`` needs to give the same result).

        ``eos_token_id``: None = the model's generation config; () = never stop on EOS.
        ``stop_token_sequences``: id sequences that end a row when its newest ids equal one.
        ``stop_strings`` (needs ``tokenizer``): a row ends at the first token after which its
        decoded text contains one. ``suppress_token_ids`` are never chosen (e.g. image/video
        placeholders). ``min_new_tokens``: EOS ids are not chosen before that many tokens.
        Greedy when ``do_sample`` is False (temperature/top-k/top-p ignored). ``seed`` or
        ``generator`` (on the model's device) makes sampling reproducible.
        """
        t_start = time.perf_counter()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        stop_strings = [s for s in stop_strings if s]
        if stop_strings and tokenizer is None:
            raise ValueError("stop_strings need the tokenizer (tokenizer=...)")
        unknown = set(model_inputs) - set(MODEL_INPUT_KEYS) - self._fwd_params
        if unknown:
            raise TypeError(f"unexpected model inputs {sorted(unknown)}")
        dev = self.device
        input_ids = input_ids.to(dev)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(dev)
        inputs = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in model_inputs.items()}
        if eos_token_id is None:
            eos_ids = self.default_eos_ids
        else:
            eos_ids = tuple([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)
        stop_seqs = [tuple(int(t) for t in s) for s in stop_token_sequences if len(s)]
        B, L = input_ids.shape
        K, N = int(num_samples), int(max_new_tokens)
        R = B * K
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

        # ---- prefill, once per prompt
        cache, hidden, next_pos = self._prefill(input_ids, attention_mask, inputs)
        first_logits = F.linear(hidden, self.lm_head.weight, self.lm_head.bias).float()
        L_cap = _round_up(L, self.prefix_bucket)
        N_cap = _round_up(max(N - 1, 1), self.suffix_bucket)
        step = self._get_step(B, K, L_cap, N_cap)
        for i, (k_pre, v_pre, _, _) in enumerate(step.kv):
            keys, values = self._cache_layer(cache, i)
            k_pre[:, :, :L].copy_(keys)
            v_pre[:, :, :L].copy_(values)
        del cache
        step.prefix_bias.fill_(-math.inf)
        step.prefix_bias[:, 0, 0, :L].masked_fill_(attention_mask.bool(), 0.0)
        step.base_pos.copy_(next_pos.repeat_interleave(K, dim=1))
        step.slot.zero_()
        sync()
        t_prefill = time.perf_counter()

        # ---- token choice setup
        V = first_logits.shape[-1]
        suppress = torch.zeros(V, dtype=torch.bool, device=dev)
        ids = [t for t in suppress_token_ids if 0 <= t < V]
        if ids:
            suppress[torch.tensor(ids, device=dev)] = True
        eos_mask = torch.zeros(V, dtype=torch.bool, device=dev)
        eos_valid = [t for t in eos_ids if 0 <= t < V]
        if eos_valid:
            eos_mask[torch.tensor(eos_valid, device=dev)] = True
        banned_early = suppress | eos_mask
        seen = None
        if repetition_penalty != 1.0:
            seen = torch.zeros(R, V, dtype=torch.bool, device=dev)
            seen.scatter_(1, input_ids.repeat_interleave(K, dim=0), True)
        if do_sample and generator is None:
            generator = torch.Generator(device=dev)
            if seed is not None:
                generator.manual_seed(int(seed))
            else:
                generator.seed()
        choose = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                      repetition_penalty=repetition_penalty, generator=generator)
        any_suppress = bool(ids)

        # ---- decode loop; host looks at step t-1's ids while the GPU runs step t
        out_ids = torch.zeros(R, N, dtype=torch.long, device=dev)
        out_lp = torch.zeros(R, N, dtype=torch.float32, device=dev)
        host = _HostStops(R, N, eos_ids, stop_seqs, stop_strings, tokenizer)
        pinned = dev.type == "cuda"
        ring = [torch.zeros(R, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        events = [torch.cuda.Event() for _ in range(2)] if pinned else None
        logits = first_logits.repeat_interleave(K, dim=0) if K > 1 else first_logits
        steps_run = 0
        t = 0
        for t in range(N):
            if t > 0:
                logits = step()
                steps_run += 1
            if t < min_new_tokens:
                banned = banned_early
            else:
                banned = suppress if any_suppress else None
            tok, lp = sample_next_tokens(logits, banned=banned, seen=seen, **choose)
            out_ids[:, t] = tok
            out_lp[:, t] = lp
            if t + 1 < N:
                step.tok.copy_(tok)
            if seen is not None:
                seen.scatter_(1, tok[:, None], True)
            if pinned:
                ring[t % 2].copy_(tok, non_blocking=True)
                events[t % 2].record()
                if t > 0:
                    events[(t - 1) % 2].synchronize()
                    if host.push(t - 1, ring[(t - 1) % 2].tolist()):
                        break
            elif host.push(t, tok.tolist()):
                break
        else:
            if pinned:
                events[(N - 1) % 2].synchronize()
                host.push(N - 1, ring[(N - 1) % 2].tolist())
        sync()
        t_end = time.perf_counter()

        # ---- outputs
        lengths = host.lengths()
        n_max = max(lengths)
        lp_host = out_lp[:, :n_max].double().cpu()
        token_logprobs = [lp_host[r, :lengths[r]].tolist() for r in range(R)]
        unit = self.num_kv_heads * self.head_dim * self.num_layers * 2 * torch.finfo(self.dtype).bits // 8
        return DecodeOutput(
            token_ids=[host.tokens[r][:lengths[r]] for r in range(R)],
            log_likelihoods=[float(sum(x)) for x in token_logprobs],
            token_logprobs=token_logprobs,
            num_tokens=lengths,
            finish_reasons=host.reasons(),
            num_prompts=B,
            num_samples=K,
            prompt_tokens=L,
            decode_steps=steps_run,
            prefill_s=t_prefill - t_start,
            decode_s=t_end - t_prefill,
            cache_bytes=(B * L_cap + R * N_cap) * unit,
            cache_reserved_bytes=sum(x.numel() * x.element_size() for s in self._storage for x in s),
            used_cuda_graph=step.graph is not None,
            eos_token_ids=tuple(eos_ids),
        )


class _HostStops:
    """Per-row stop bookkeeping on the host, fed each step's chosen ids in order."""

    def __init__(self, R, N, eos_ids, stop_seqs, stop_strings, tokenizer):
        self.R, self.N = R, N
        self.eos = set(int(e) for e in eos_ids)
        self.stop_seqs = stop_seqs
        self.stop_strings = stop_strings
        self.tokenizer = tokenizer
        self.window = max([len(s) for s in stop_strings], default=0) + 8
        self.tokens: list[list[int]] = [[] for _ in range(R)]
        self.done: list[str | None] = [None] * R
        self.remaining = R

    def push(self, t: int, ids: list[int]) -> bool:
        """Record the ids chosen at step t; True when every row has stopped."""
        for r, tok in enumerate(ids):
            if self.done[r] is not None:
                continue
            row = self.tokens[r]
            row.append(tok)
            reason = None
            if tok in self.eos:
                reason = "eos"
            elif any(len(row) >= len(s) and tuple(row[-len(s):]) == s for s in self.stop_seqs):
                reason = "stop"
            elif self.stop_strings:
                text = self.tokenizer.decode(row[-self.window:])
                if any(s in text for s in self.stop_strings):
                    reason = "stop"
            if reason is None and t == self.N - 1:
                reason = "length"
            if reason is not None:
                self.done[r] = reason
                self.remaining -= 1
        return self.remaining == 0

    def lengths(self) -> list[int]:
        return [len(row) for row in self.tokens]

    def reasons(self) -> list[str]:
        return [d or "length" for d in self.done]
