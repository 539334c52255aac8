"""Decode-engine benchmark: ``DecodeEngine`` against transformers ``generate`` on the same inputs.

Builds a Qwen2.5-VL-7B-sized model from its configuration with random weights (bf16, nothing
downloaded), then measures, side by side in one run:

* batch 1, greedy, 840x840 image prompt: decode tokens/s (prefill excluded) and whole-call time;
* K=5 samples of 32 tokens from a 32-frame 448x448 video prompt: one engine call (shared
  prefill) vs 5 sequential ``generate`` calls (and one batched ``generate``, for reference);
* K=5 samples of 100 tokens from an 840x840 image prompt: likewise;
* the KV cache memory of the engine.

Random weights rarely produce EOS, so both sides are forced to a fixed number of new tokens
(``min_new_tokens = max_new_tokens``, the same on both sides).

    python benchmarks/bench_decode.py                 # H100, 7B config (needs ~20 GB GPU memory)
    python benchmarks/bench_decode.py --quick         # tiny config on the CPU, smoke test
    python benchmarks/bench_decode.py --json out.json # also write the numbers
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from videoseg_r1.reasoning.decode import DecodeEngine  # noqa: E402

IM_START, IM_END, NEWLINE, ASSISTANT = 151644, 151645, 198, 77091
BOS = 151643


def build_model(quick: bool, device: str, dtype: torch.dtype):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if quick:
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                            "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                      fullatt_block_indexes=[1])
    else:  # Qwen2.5-VL-7B-Instruct's configuration
        text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                    num_key_value_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                            "mrope_section": [16, 24, 24]})
        vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                      fullatt_block_indexes=[7, 15, 23, 31])
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
                         hidden_act="silu", eos_token_id=IM_END, bos_token_id=BOS, pad_token_id=BOS, **text),
        vision_config=dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           tokens_per_second=2, hidden_act="silu", **vision),
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype)
    # explicit random init (std 0.02, norms 1, biases 0): nothing left uninitialised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("ln_q.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    model.eval()
    model.generation_config.pad_token_id = BOS
    model.generation_config.eos_token_id = IM_END
    return model


def _text(n: int, g: torch.Generator) -> list[int]:
    return torch.randint(1000, 100000, (n,), generator=g).tolist()


def video_prompt(model, frames: int, size: int, device, dtype):
    """Chat-shaped prompt with one video of ``frames`` frames of size x size (2 frames/s)."""
    g = torch.Generator().manual_seed(1)
    vc = model.config.vision_config
    patch, merge, tp = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
    t, h = frames // tp, size // patch
    n_tokens = t * h * h // merge**2
    ids = ([IM_START] + _text(12, g) + [model.config.vision_start_token_id]
           + [model.config.video_token_id] * n_tokens + [model.config.vision_end_token_id]
           + _text(40, g) + [IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE])
    ids = torch.tensor([ids], device=device)
    return ids, dict(
        pixel_values_videos=torch.randn(t * h * h, 3 * tp * patch * patch, generator=g).to(device, dtype),
        video_grid_thw=torch.tensor([[t, h, h]], device=device),
        second_per_grid_ts=torch.tensor([tp / 2.0], device=device),
        mm_token_type_ids=2 * (ids == model.config.video_token_id).int(),
    )


def image_prompt(model, size: int, device, dtype):
    g = torch.Generator().manual_seed(2)
    vc = model.config.vision_config
    patch, merge, tp = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
    h = size // patch
    n_tokens = h * h // merge**2
    ids = ([IM_START] + _text(12, g) + [model.config.vision_start_token_id]
           + [model.config.image_token_id] * n_tokens + [model.config.vision_end_token_id]
           + _text(80, g) + [IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE])
    ids = torch.tensor([ids], device=device)
    return ids, dict(
        pixel_values=torch.randn(h * h, 3 * tp * patch * patch, generator=g).to(device, dtype),
        image_grid_thw=torch.tensor([[1, h, h]], device=device),
        mm_token_type_ids=(ids == model.config.image_token_id).int(),
    )


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def run_generate(model, ids, kw, n, k=1, do_sample=False, seed=0, **extra):
    if do_sample:
        torch.manual_seed(seed)
    samp = dict(do_sample=True, temperature=1.0, top_p=0.95, top_k=0) if do_sample else dict(do_sample=False)
    with torch.inference_mode():
        model.model.rope_deltas = None
        return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              min_new_tokens=n, num_return_sequences=k, pad_token_id=BOS, **samp, **extra, **kw)


def prefill_time(model, ids, kw, device):
    def f():
        with torch.inference_mode():
            model.model.rope_deltas = None
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1, **kw)
    f()
    return timed(f, device)[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny config on the CPU (smoke test)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--no-graph", action="store_true", help="engine without CUDA graph (eager step)")
    ap.add_argument("--no-fuse", action="store_true", help="skip the torch.compile-fused engine variant")
    args = ap.parse_args(argv)
    device = "cpu" if args.quick or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if not args.quick and device == "cpu":
        print("no CUDA device: use --quick for the CPU smoke test", file=sys.stderr)
        return 2
    frames, vsize, isize = (4, 56, 112) if args.quick else (32, 448, 840)
    n_img, n_vid, K = (8, 4, 5) if args.quick else (100, 32, 5)

    t0 = time.perf_counter()
    model = build_model(args.quick, device, dtype)
    _sync(device)
    print(f"model built in {time.perf_counter() - t0:.1f} s on {device} ({dtype}); "
          f"torch {torch.__version__}", flush=True)
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}, weights {torch.cuda.memory_allocated() / 2**30:.1f} GiB",
              flush=True)
    variants = {"engine": DecodeEngine(model, use_cuda_graph=False if args.no_graph else None)}
    if not args.no_fuse:
        variants["engine+fuse"] = DecodeEngine(model, use_cuda_graph=False if args.no_graph else None, fuse=True)
    engine = variants["engine"]
    vid = video_prompt(model, frames, vsize, device, dtype)
    img = image_prompt(model, isize, device, dtype)
    print(f"prompts: video {vid[0].shape[1]} tokens ({frames} frames {vsize}x{vsize}), "
          f"image {img[0].shape[1]} tokens ({isize}x{isize})", flush=True)
    res: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                 "video_prompt_tokens": vid[0].shape[1], "image_prompt_tokens": img[0].shape[1],
                 "variants": list(variants), "graph": engine.use_cuda_graph}

    def eng(e, prompt, n, k=1, do_sample=False, seed=0):
        ids, kw = prompt
        return e.generate(ids, num_samples=k, max_new_tokens=n, min_new_tokens=n, do_sample=do_sample,
                          temperature=1.0, top_p=0.95 if do_sample else 1.0, seed=seed, **kw)

    # warm-up: cuBLAS, then each engine shape once (graph capture; compilation for +fuse)
    run_generate(model, img[0], img[1], 2)
    res["warmup_s"] = {}
    for name, e in variants.items():
        t0 = time.perf_counter()
        for prompt, n, k in ((img, n_img, 1), (vid, n_vid, K), (img, n_img, K)):
            eng(e, prompt, n, k, do_sample=k > 1)
        res["warmup_s"][name] = round(time.perf_counter() - t0, 2)
        print(f"warm-up {name}: {res['warmup_s'][name]:.1f} s", flush=True)

    # ---- 1. batch 1 greedy, image prompt
    pf_img = prefill_time(model, *img, device)
    pf_vid = prefill_time(model, *vid, device)
    g_out, g_s = timed(lambda: run_generate(model, *img, n_img, output_logits=True, return_dict_in_generate=True),
                       device)
    g_toks = g_out.sequences[0, img[0].shape[1]:].tolist()
    b1 = res["b1"] = dict(new_tokens=n_img, prefill_s=pf_img, generate_s=g_s,
                          generate_decode_tok_s=(n_img - 1) / (g_s - pf_img))
    runs = dict(variants)
    if device == "cuda" and not args.no_graph:
        runs["engine (eager step)"] = DecodeEngine(model, use_cuda_graph=False)
    for name, e in runs.items():
        trials = [timed(lambda: eng(e, img, n_img), device) for _ in range(3)]
        e_out, e_s = min(trials, key=lambda x: x[1])
        decode_s = sorted(o.decode_s for o, _ in trials)[1]  # median of 3
        same = 0
        for a, b in zip(g_toks, e_out.token_ids[0]):
            if a != b:
                break
            same += 1
        b1[name] = dict(s=e_s, decode_s=decode_s, decode_tok_s=(n_img - 1) / decode_s,
                        greedy_identical_prefix=same)
        note = ""
        if same < n_img:  # how close generate's own logits were between the two choices (bf16 near-tie?)
            lg = g_out.logits[same][0].float()
            gap = float(lg[g_toks[same]] - lg[e_out.token_ids[0][same]])
            b1[name].update(divergence_logit_gap=gap, logit_std=float(lg.std()))
            note = f"; first divergence at token {same}: generate's logit gap {gap:.4f} (logit std {lg.std():.3f})"
        print(f"[b1] {name}: {e_s:.2f}s, decode {b1[name]['decode_tok_s']:.1f} tok/s "
              f"(generate {b1['generate_decode_tok_s']:.1f}); greedy identical to generate for "
              f"{same}/{n_img} tokens{note}", flush=True)
    runs.pop("engine (eager step)", None)

    # ---- 2./3. K samples: engine (one call) vs K sequential generate calls vs one batched generate
    for key, prompt, n, pf in (("video_k5", vid, n_vid, pf_vid), ("image_k5", img, n_img, pf_img)):
        seq_s = 0.0
        for i in range(K):
            seq_s += timed(lambda: run_generate(model, *prompt, n, do_sample=True, seed=i), device)[1]
        _, bat_s = timed(lambda: run_generate(model, *prompt, n, k=K, do_sample=True), device)
        x = res[key] = dict(new_tokens=n, k=K, prompt_prefill_s=pf, generate_sequential_s=seq_s,
                            generate_batched_s=bat_s,
                            generate_kv_bytes=K * (prompt[0].shape[1] + n) * engine.bytes_per_token)
        for name, e in variants.items():
            e_out, e_s = timed(lambda: eng(e, prompt, n, K, do_sample=True, seed=1), device)
            x[name] = dict(s=e_s, prefill_s=e_out.prefill_s, decode_s=e_out.decode_s,
                           decode_tok_s=K * (n - 1) / e_out.decode_s,
                           speedup_vs_sequential=seq_s / e_s, speedup_vs_batched=bat_s / e_s,
                           distinct_samples=len({tuple(t) for t in e_out.token_ids}),
                           cache_bytes=e_out.cache_bytes, cache_reserved_bytes=e_out.cache_reserved_bytes)
            print(f"[{key}] {name} {e_s:.2f}s (prefill {e_out.prefill_s:.2f}) | {K} sequential generate "
                  f"{seq_s:.2f}s ({seq_s / e_s:.1f}x) | batched generate {bat_s:.2f}s ({bat_s / e_s:.1f}x); "
                  f"{x[name]['distinct_samples']}/{K} distinct", flush=True)
    if device == "cuda":
        res["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print_table(res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


def print_table(r: dict) -> None:
    mib = 2**20
    names = r["variants"]
    b1 = r["b1"]
    extra = [n for n in b1 if isinstance(b1[n], dict) and n not in names]
    rows = [("batch 1 greedy, image, decode tok/s", f"{b1['generate_decode_tok_s']:.1f}",
             *[f"{b1[n]['decode_tok_s']:.1f}" for n in names])]
    rows += [(f"  ({n})", "", f"{b1[n]['decode_tok_s']:.1f}", *[""] * (len(names) - 1)) for n in extra]
    rows.append((f"batch 1 greedy, image, {b1['new_tokens']} tok, whole call s", f"{b1['generate_s']:.2f}",
                 *[f"{b1[n]['s']:.2f}" for n in names]))
    for key, label in (("video_k5", "video"), ("image_k5", "image")):
        x = r[key]
        rows.append((f"K={x['k']} x {x['new_tokens']} tok, {label}: {x['k']} sequential generate, s",
                     f"{x['generate_sequential_s']:.2f}", *[f"{x[n]['s']:.2f}" for n in names]))
        rows.append(("  speed-up vs sequential generate", "",
                     *[f"{x[n]['speedup_vs_sequential']:.1f}x" for n in names]))
        rows.append((f"  one batched generate (num_return_sequences={x['k']}): s | speed-up", f"{x['generate_batched_s']:.2f}",
                     *[f"{x[n]['speedup_vs_batched']:.1f}x" for n in names]))
        rows.append((f"  KV cache MiB (generate: {x['k']} full copies)", f"{x['generate_kv_bytes'] / mib:.0f}",
                     *[f"{x[n]['cache_bytes'] / mib:.0f}" for n in names]))
    head = ("measure", "generate", *names)
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
    line = lambda row: " | ".join(f"{c:<{widths[0]}}" if i == 0 else f"{c:>{widths[i]}}" for i, c in enumerate(row))
    print("\n" + line(head))
    print("-" * (sum(widths) + 3 * len(widths)))
    for row in rows:
        print(line(row))
    print(f"device: {r['device']}; CUDA graph: {r['graph']}; prompts: video {r['video_prompt_tokens']} tokens, "
          f"image {r['image_prompt_tokens']} tokens; prefill video {r['video_k5']['prompt_prefill_s']:.2f} s, "
          f"image {r['image_k5']['prompt_prefill_s']:.2f} s; warm-up (captures, compiles) {r['warmup_s']}"
          + (f"; peak GPU {r['peak_gpu_gib']:.1f} GiB" if "peak_gpu_gib" in r else ""))


if __name__ == "__main__":
    sys.exit(main())
