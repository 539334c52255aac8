"""Speed of stage 1 (HTFS) and stage 2 (reasoning step) with a Qwen2.5-VL-7B-sized random model.

Run on a GPU (bf16, SDPA):   python benchmarks/bench_reasoner.py
CPU smoke test (tiny model): python benchmarks/bench_reasoner.py --quick

What it measures, in one run (random weights, so answers are garbage: HTFS takes its recorded
fallback after round 1 -- whole video -- then asks for the position; the token counts are what
a real model would decode at most):
  * one HTFS call on a ``--frames``-frame video (``--shown`` frames shown at ``--frame-size``),
    split into vision encoding / prefill / decode per model call;
  * the reasoning step (context frames + an 840x840 target frame, greedy, ``--reason-tokens``);
  * K-sample batched generation (one call, shared prefill) against K sequential calls, for the
    video prompt and for the image prompt.
Prints a table; ``--json PATH`` also writes the numbers. Targets (issue 4): HTFS + reasoning
< 3 s; batched K=5 >= 3x faster than sequential.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def qwen25vl_7b_config(vocab_size: int, token_ids: dict):
    """Qwen2.5-VL-7B-Instruct's published sizes (hidden 3584, 28 layers, 32-block vision tower)."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=3584, intermediate_size=18944,
                         num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                         max_position_embeddings=128000, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                          "mrope_section": [16, 24, 24]},
                         bos_token_id=token_ids["<|endoftext|>"], eos_token_id=token_ids["<|im_end|>"],
                         pad_token_id=token_ids["<|endoftext|>"]),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                           tokens_per_second=2),
        image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"], vision_end_token_id=token_ids["<|vision_end|>"],
    )


def build(args):
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from videoseg_r1.config import ReasonerConfig
    from videoseg_r1.reasoning.reasoner import Reasoner
    from videoseg_r1.reasoning.tiny import TINY_SPECIAL_TOKENS, build_tiny_processor, build_tiny_reasoner

    cfg = ReasonerConfig(model="random", max_new_tokens=args.reason_tokens,
                         model_input_size=args.input_size, context_frame_size=args.frame_size)
    if args.quick:
        model, processor = build_tiny_reasoner()
        return Reasoner(model, processor, cfg)
    processor = build_tiny_processor()  # tokenizer ids only matter for the special tokens
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in TINY_SPECIAL_TOKENS}
    config = qwen25vl_7b_config(152064, ids)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16,
                                                                attn_implementation="sdpa")
    model.eval()
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    return Reasoner(model, processor, cfg)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def row(name, seconds, timing=None, note=""):
    t = timing or {}
    get = (lambda k: t.get(k, 0.0)) if isinstance(t, dict) else (lambda k: getattr(t, k))
    tps = get("new_tokens") / get("decode_s") if get("decode_s") else 0.0
    return {"what": name, "total_s": seconds, "vision_s": get("vision_s"), "prefill_s": get("prefill_s"),
            "decode_s": get("decode_s"), "new_tokens": int(get("new_tokens")), "decode_tok_s": tps,
            "prompt_tokens": int(get("prompt_tokens")), "note": note}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny random model on the CPU (smoke test)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--shown", type=int, default=32)
    p.add_argument("--frame-size", type=int, default=448)
    p.add_argument("--input-size", type=int, default=840)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--reason-tokens", type=int, default=100)
    p.add_argument("--interval-tokens", type=int, default=32)
    p.add_argument("--position-tokens", type=int, default=16)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.device, args.frames, args.shown, args.frame_size, args.input_size = "cpu", 40, 8, 56, 84
        args.reason_tokens, args.interval_tokens, args.position_tokens = 8, 6, 4
    elif not torch.cuda.is_available():
        print("CUDA is not available; use --quick for the CPU smoke test", file=sys.stderr)
        return 2

    from videoseg_r1.config import SamplerConfig
    from videoseg_r1.reasoning.reason import reason
    from videoseg_r1.reasoning.reasoner import render_template
    from videoseg_r1.reasoning.sampler import sample_frames, uniform_indices
    from videoseg_r1.video import ArrayVideo

    t0 = time.perf_counter()
    reasoner = build(args)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    h, w = (480, 854) if not args.quick else (48, 64)
    video = ArrayVideo([rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(args.frames)], fps=30)
    scfg = SamplerConfig(num_interval_samples=args.k, num_position_samples=args.k,
                         max_frames_shown=args.shown, frame_size=args.frame_size,
                         interval_max_new_tokens=args.interval_tokens,
                         position_max_new_tokens=args.position_tokens)
    shown = uniform_indices(0, args.frames - 1, args.shown)
    frames = video.get_frames(shown)
    ts = [float(video.timestamps()[i]) for i in shown]
    size = (args.frame_size, args.frame_size)
    text = render_template("interval", query="the dog that jumps first", num_frames=len(shown),
                           start_s=0.0, end_s=ts[-1])
    # warm-up, not timed: one whole HTFS + reasoning call on another video of the same size, so
    # kernels, allocator pools, the decode engine's buffers and CUDA graphs exist for these shapes
    # (a long-running process such as `predict` pays this once). Its time is reported as "cold".
    other = ArrayVideo([rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(args.frames)], fps=30)
    t_cold = time.perf_counter()
    cold = sample_frames(other, "the dog that jumps first", reasoner, scfg)
    reason(other, cold, "the dog that jumps first", reasoner)
    reasoner.generate(text, frames, timestamps_s=ts, frame_size_hw=size, num_samples=args.k, do_sample=True,
                      max_new_tokens=args.interval_tokens)
    import cv2

    img = cv2.resize(other.get_frames([0])[0], (args.input_size, args.input_size))
    for k in (1, args.k):
        reasoner.generate(text, [img], as_video=False, timestamps_s=[0.0], num_samples=k, do_sample=True,
                          max_new_tokens=args.interval_tokens)
    sync()
    cold_s = time.perf_counter() - t_cold
    del other
    reasoner.clear_vision_cache()
    if torch.cuda.is_available() and not args.quick:
        torch.cuda.reset_peak_memory_stats()

    rows = []
    # ---- one HTFS call + the reasoning step (cold vision cache)
    sampled, htfs_s = timed(lambda: sample_frames(video, "the dog that jumps first", reasoner, scfg))
    for rnd in sampled.rounds:
        name = f"HTFS {rnd.stage}" + (f" round {rnd.round}" if rnd.stage == "interval" else "")
        rows.append(row(name, rnd.seconds, rnd.timing, f"K={args.k}"))
    rows.append(row("HTFS total", htfs_s, None, "; ".join(sampled.fallbacks)))
    res, reason_s = timed(lambda: reason(video, sampled, "the dog that jumps first", reasoner))
    rows.append(row("reasoning step", reason_s, res.timing,
                    f"{len(res.shown_frame_indices) - 1} context + target {args.input_size}px, greedy"))
    rows.append(row("HTFS + reasoning", htfs_s + reason_s, None, "target < 3 s"))
    rows.append(row("first call (cold: allocation, graph capture)", cold_s, None, "HTFS + reasoning + K=5 sampling"))

    # ---- batched K vs K sequential calls (same prompts)
    def batched(frames_, as_video, keys):
        return reasoner.generate(text, frames_, as_video=as_video, timestamps_s=ts[:len(frames_)],
                                 frame_keys=keys, frame_size_hw=size if as_video else None,
                                 num_samples=args.k, do_sample=True, max_new_tokens=args.interval_tokens)

    def sequential(frames_, as_video, keys, clear):
        outs = []
        for _ in range(args.k):
            if clear:
                reasoner.clear_vision_cache()
            outs.append(reasoner.generate(text, frames_, as_video=as_video, timestamps_s=ts[:len(frames_)],
                                          frame_keys=keys, frame_size_hw=size if as_video else None,
                                          num_samples=1, do_sample=True, max_new_tokens=args.interval_tokens))
        return outs

    target = [video.get_frames([sampled.target_frame_idx])[0]]
    import cv2

    target = [cv2.resize(target[0], (args.input_size, args.input_size))]
    speedups = {}
    for label, frames_, as_video, keys in (("video prompt", frames, True, shown),
                                           ("image prompt", target, False, ["target"])):
        reasoner.clear_vision_cache()
        out_b, tb = timed(lambda: batched(frames_, as_video, keys))
        reasoner.clear_vision_cache()
        outs, ts_cold = timed(lambda: sequential(frames_, as_video, keys, clear=True))
        reasoner.clear_vision_cache()
        outs_w, ts_warm = timed(lambda: sequential(frames_, as_video, keys, clear=False))
        rows.append(row(f"{label}: batched K={args.k}", tb, out_b.timing, "1 call, shared prefill"))
        rows.append(row(f"{label}: {args.k} sequential", ts_cold, None, "each call encodes + prefills"))
        rows.append(row(f"{label}: {args.k} sequential (vision cached)", ts_warm, None, ""))
        speedups[label] = {"vs_sequential": ts_cold / tb, "vs_sequential_vision_cached": ts_warm / tb}

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.quick else "cpu"
    print(f"\nreasoner benchmark on {device}; model built in {load_s:.1f} s; "
          f"{args.frames}-frame video, {args.shown} frames shown at {args.frame_size}px, K={args.k}")
    header = f"{'what':44s} {'total s':>8s} {'vision':>7s} {'prefill':>8s} {'decode':>7s} {'tok':>5s} {'tok/s':>7s} {'prompt':>7s}  note"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['what']:44s} {r['total_s']:8.3f} {r['vision_s']:7.3f} {r['prefill_s']:8.3f} "
              f"{r['decode_s']:7.3f} {r['new_tokens']:5d} {r['decode_tok_s']:7.1f} {r['prompt_tokens']:7d}  {r['note']}")
    for label, sp in speedups.items():
        print(f"speed-up of batched K={args.k} ({label}): {sp['vs_sequential']:.2f}x vs sequential, "
              f"{sp['vs_sequential_vision_cached']:.2f}x vs sequential with the vision cache (target >= 3x)")
    if torch.cuda.is_available() and not args.quick:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "args": vars(args), "rows": rows, "speedups": speedups}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
