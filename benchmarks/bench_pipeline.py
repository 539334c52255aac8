"""End-to-end wall time of the pipeline on a 300-frame 480p video, per stage (issue 6).

Full-size architectures with random weights, built in code (nothing is downloaded): a
Qwen2.5-VL-7B-sized reasoner (bf16, the fast decode engine), SAM2 with the Hiera-L configuration,
and the official XMem architecture. Random weights answer garbage, so the run is made of two
calls of the same loaded pipeline: (1) HTFS + reasoning exactly as a user's call runs them (the
decode lengths are forced to the worst case the config allows: interval/position/reasoning
tokens); (2) SAM2 + XMem from a box + positive + negative point on the target frame chosen in (1),
as they run after a usable answer. Total = sum of the stages. Target: faster than real time
(10 s of 30 fps video in under 10 s).

    python benchmarks/bench_pipeline.py                 # CUDA
    python benchmarks/bench_pipeline.py --quick         # CPU smoke test with tiny models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def build_sam2(quick: bool, device: str):
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    from videoseg_r1.segmentation.tiny import build_tiny_sam2

    if quick:
        return build_tiny_sam2()
    torch.manual_seed(0)
    hiera_l = dict(model_type="sam2_hiera_det_model", hidden_size=144, num_attention_heads=2,
                   blocks_per_stage=[2, 6, 36, 4], embed_dim_per_stage=[144, 288, 576, 1152],
                   num_attention_heads_per_stage=[2, 4, 8, 16], window_size_per_stage=[8, 4, 16, 8],
                   global_attention_blocks=[23, 33, 43], window_positional_embedding_background_size=[7, 7])
    config = Sam2Config(vision_config=dict(backbone_config=hiera_l, backbone_channel_list=[1152, 576, 288, 144]))
    with torch.device(device):
        model = Sam2Model(config).eval()
    return model, Sam2Processor(image_processor=Sam2ImageProcessor())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny models on the CPU (smoke test)")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--reason-tokens", type=int, default=100)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = "cpu" if args.quick else "cuda"
    if not args.quick and not torch.cuda.is_available():
        print("CUDA is not available; use --quick for the CPU smoke test", file=sys.stderr)
        return 2

    from bench_reasoner import build as build_reasoner

    from videoseg_r1.config import PipelineConfig, SamplerConfig
    from videoseg_r1.pipeline import VideoSegR1Pipeline
    from videoseg_r1.reasoning.sampler import FrameSampler
    from videoseg_r1.segmentation.keyframe import KeyFrameSegmenter
    from videoseg_r1.segmentation.propagation import XMemPropagator
    from videoseg_r1.segmentation.tiny import build_tiny_xmem
    from videoseg_r1.segmentation.xmem import XMem
    from videoseg_r1.types import ObjectPrompt
    from videoseg_r1.video import ArrayVideo

    rargs = argparse.Namespace(quick=args.quick, device=device, reason_tokens=args.reason_tokens,
                               input_size=84 if args.quick else 840, frame_size=56 if args.quick else 448)
    t0 = time.perf_counter()
    reasoner = build_reasoner(rargs)
    sam, proc = build_sam2(args.quick, device)
    torch.manual_seed(0)
    xmem = build_tiny_xmem() if args.quick else XMem().eval()
    scfg = SamplerConfig(frame_size=rargs.frame_size, max_frames_shown=8 if args.quick else 32)
    pipe = VideoSegR1Pipeline(PipelineConfig(), reasoner=reasoner, frame_selector=FrameSampler(reasoner, scfg),
                              segmenter=KeyFrameSegmenter(model=sam, processor=proc, device=device),
                              propagator=XMemPropagator(network=xmem, device=device))
    build_s = time.perf_counter() - t0

    h, w = (48, 64) if args.quick else (480, 854)
    n = 24 if args.quick else args.frames
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for t in range(n):
        f = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        f[(yy - h * 0.5) ** 2 + (xx - w * 0.3 - t) ** 2 < (h * 0.15) ** 2] = (220, 40, 40)
        frames.append(f)
    video = ArrayVideo(frames, fps=args.fps, name="synthetic-480p.mp4")
    query = "the red ball that rolls to the right"

    box = (w * 0.3 - h * 0.15, h * 0.35, w * 0.3 + h * 0.15, h * 0.65)
    prompt = [ObjectPrompt(0, box_xyxy=box, points_xy=[(w * 0.3, h * 0.5), (box[2] + 5, h * 0.5)], labels=[1, 0])]
    # warm-up on another video of the same shape (a long-running process pays this once):
    # kernels, cudnn autotuning, the decode engine's buffers and CUDA graphs, XMem's graphs
    other = ArrayVideo([np.ascontiguousarray(f[:, ::-1]) for f in frames], fps=args.fps, name="warmup")
    t_cold = time.perf_counter()
    pipe(other, query)
    pipe(other, query, prompts=prompt, target_frame_idx=n // 2)
    cold_s = time.perf_counter() - t_cold

    r1 = pipe(video, query)
    r2 = pipe(video, query, prompts=[ObjectPrompt(0, box_xyxy=box, points_xy=prompt[0].points_xy, labels=[1, 0])],
              target_frame_idx=r1.target_frame_idx)
    stages = {"HTFS (stage 1)": r1.trace.stage_seconds["sampling"],
              "reasoning (stage 2)": r1.trace.stage_seconds["reasoning"],
              "SAM2 key frame": r2.trace.stage_seconds["keyframe_segmentation"],
              "XMem propagation": r2.trace.stage_seconds["propagation"]}
    total = sum(stages.values())
    dev = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"\npipeline benchmark on {dev}: {n} frames {h}x{w} ({n / args.fps:.1f} s of video at {args.fps:g} fps), "
          f"models built in {build_s:.1f} s; reasoning tokens {r1.reasoning.num_tokens}")
    print(f"{'stage':28s} {'seconds':>8s} {'peak GB':>8s}")
    peaks = {**r1.trace.peak_memory_mb, **r2.trace.peak_memory_mb}
    keys = {"HTFS (stage 1)": "sampling", "reasoning (stage 2)": "reasoning",
            "SAM2 key frame": "keyframe_segmentation", "XMem propagation": "propagation"}
    for name, s in stages.items():
        peak = peaks.get(keys[name], float("nan")) / 1024 if device == "cuda" else float("nan")
        print(f"{name:28s} {s:8.2f} {peak:8.2f}")
    print(f"{'total':28s} {total:8.2f}   ({n / total:.1f} frames/s end to end; real time needs {args.fps:g})")
    print(f"first (cold) call of the loaded pipeline: {cold_s:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"stages_s": stages, "total_s": total, "frames": n, "device": dev,
                       "reasoning_tokens": r1.reasoning.num_tokens, "trace": r1.trace.to_dict()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
