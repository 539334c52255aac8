"""Speed and memory of mask propagation: our XMem and transformers' SAM2 video, random weights.

Full-size networks (XMem = the official architecture, SAM2 = Hiera-L configuration) on a synthetic
480x854 video streamed through the same ``Video`` interface the pipeline uses, 1 and 3 objects, 300
and 1500 frames, fp32 against bf16, all in one run; prints frames/s and peak GPU memory as a table.
Propagation runs forward from frame 0 (one direction), after a warm-up run of the same propagator
on a short video with the same chunking (same key-encoder batch shapes, so cudnn's autotuning and
the CUDA-graph captures happen before the clock starts, never inside the timed run).

    python benchmarks/bench_propagation.py                # CUDA, the full table (several minutes)
    python benchmarks/bench_propagation.py --quick        # CPU smoke test with tiny networks
    python benchmarks/bench_propagation.py --backends xmem --frames 300 --objects 1 --output out.json
    python benchmarks/bench_propagation.py --backends xmem --graphs on off --channels-last on off
    python benchmarks/bench_propagation.py --profile prof.txt   # torch.profiler tables of one XMem run
    python benchmarks/bench_propagation.py --check              # CUDA graphs vs eager: same probabilities
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

from videoseg_r1.video import Video


class SyntheticVideo(Video):
    """A streamed synthetic video: ``pool`` pre-rendered frames (moving discs over noise) cycled, so that
    frames cost nothing to produce and nothing holds the whole video."""

    def __init__(self, num_frames: int, height: int, width: int, pool: int = 16, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.path = Path(f"<synthetic {num_frames}x{height}x{width}>")
        self.fps, self.short_side = 30.0, None
        self.orig_height, self.orig_width = height, width
        self._n = num_frames
        yy, xx = np.mgrid[:height, :width]
        self._pool = []
        for t in range(pool):
            f = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
            for k in range(3):
                cy, cx = height * (0.3 + 0.2 * k), width * (0.2 + 0.25 * k) + 3 * t
                f[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(height, width) * 0.1) ** 2] = (200, 60 * k, 255 - 60 * k)
            self._pool.append(f)

    def __len__(self) -> int:
        return self._n

    def get_frames(self, indices):
        return [self._pool[self._check_index(int(i)) % len(self._pool)] for i in indices]


def key_masks(video: Video, num_objects: int) -> dict[int, np.ndarray]:
    h, w = video.height, video.width
    yy, xx = np.mgrid[:h, :w]
    out = {}
    for k in range(num_objects):
        cy, cx = h * (0.3 + 0.2 * k), w * (0.2 + 0.25 * k)
        out[k + 1] = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) * 0.1) ** 2
    return out


# ------------------------------------------------------------------------------------- builders


def build_xmem(quick: bool):
    import torch

    from videoseg_r1.segmentation.tiny import build_tiny_xmem
    from videoseg_r1.segmentation.xmem import XMem

    if quick:
        return build_tiny_xmem()
    torch.manual_seed(0)
    return XMem().eval()  # the official architecture, random weights


def build_sam2_video(quick: bool):
    from videoseg_r1.segmentation.tiny import build_tiny_sam2_video

    if quick:
        return build_tiny_sam2_video(image_size=64)
    import torch
    from transformers import (Sam2ImageProcessor, Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor,
                              Sam2VideoVideoProcessor)

    torch.manual_seed(0)
    hiera_l = dict(model_type="sam2_hiera_det_model", hidden_size=144, num_attention_heads=2,
                   blocks_per_stage=[2, 6, 36, 4], embed_dim_per_stage=[144, 288, 576, 1152],
                   num_attention_heads_per_stage=[2, 4, 8, 16], window_size_per_stage=[8, 4, 16, 8],
                   global_attention_blocks=[23, 33, 43], window_positional_embedding_background_size=[7, 7])
    config = Sam2VideoConfig(vision_config=dict(backbone_config=hiera_l, backbone_channel_list=[1152, 576, 288, 144]))
    model = Sam2VideoModel(config).eval()
    processor = Sam2VideoProcessor(image_processor=Sam2ImageProcessor(), video_processor=Sam2VideoVideoProcessor())
    return model, processor


# ------------------------------------------------------------------------------------- measuring


def warmup_length(num_frames: int, key_batch: int) -> int:
    """A short video whose forward run has the same chunk sizes as a ``num_frames`` one (two full
    chunks of ``key_batch`` frames, then the same remainder), so that the warm-up meets every
    key-encoder batch shape of the timed run."""
    n = 1 + 2 * key_batch + (num_frames - 1) % key_batch
    while n < 20:  # at least ~20 frames: memory frames, both decoder variants, the last-frame path
        n += key_batch
    return min(num_frames, n)


def run_case(make_propagator, video: Video, num_objects: int, device: str, key_batch: int = 1) -> dict:
    import torch

    cuda = device.startswith("cuda")
    prop = make_propagator()
    masks = key_masks(video, num_objects)
    warm = SyntheticVideo(warmup_length(len(video), key_batch), video.height, video.width)
    for _ in prop.propagate(warm, 0, masks):  # warm-up: kernels, cudnn autotuning, graph capture, allocator
        pass
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    frames = sum(1 for _ in prop.propagate(video, 0, masks))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del prop
    gc.collect()  # drop the propagator (and its CUDA graphs) before the next row's peak is measured
    if cuda:
        torch.cuda.empty_cache()
    return {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 1), "peak_gb": round(peak, 3)}


def profile_xmem(net, device: str, precision: str, num_objects: int, key_batch: int, num_frames: int,
                 height: int, width: int, short_side: int, path: str, **prop_kwargs) -> str:
    """torch.profiler over one forward XMem run (after a warm-up): the ops by device time and by host
    time, and how busy the device was (sum of kernel times / wall time). Appends to ``path``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from videoseg_r1.config import PropagatorConfig
    from videoseg_r1.segmentation.propagation import XMemPropagator

    cfg = PropagatorConfig(device=device, dtype=precision, short_side=short_side)
    prop = XMemPropagator(net, cfg, key_batch=key_batch, directions="forward", **prop_kwargs)
    video = SyntheticVideo(num_frames, height, width)
    masks = key_masks(video, num_objects)
    for _ in prop.propagate(SyntheticVideo(warmup_length(num_frames, key_batch), height, width), 0, masks):
        pass
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in prop.propagate(video, 0, masks):
            pass
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    events = prof.key_averages()

    def dev(e):
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)

    kernel_us = sum(dev(e) for e in events)
    head = (f"== {precision} {num_objects} obj kb{key_batch} {num_frames} fr {prop_kwargs}: wall {wall * 1e3:.0f} ms "
            f"= {wall * 1e3 / num_frames:.2f} ms/frame; device busy {kernel_us / 1e3:.0f} ms "
            f"= {kernel_us / 1e3 / num_frames:.2f} ms/frame ({100 * kernel_us / 1e6 / wall:.0f}%)")
    text = [head]
    for key in ("self_device_time_total", "self_cpu_time_total"):
        try:
            text.append(events.table(sort_by=key, row_limit=30, max_name_column_width=60))
        except Exception as exc:  # older names
            text.append(f"(table by {key} failed: {exc})")
    with open(path, "a") as fh:
        fh.write("\n".join(text) + "\n\n")
    return head


def check_graphs(net, device: str, precision: str, num_objects: int, num_frames: int, height: int, width: int,
                 short_side: int) -> str:
    """Same frames through the inference core eagerly and with CUDA graphs: largest probability
    difference and label agreement over ``num_frames`` frames (the memory loop included)."""
    import torch

    from videoseg_r1.config import PropagatorConfig
    from videoseg_r1.segmentation.propagation import XMemPropagator
    from videoseg_r1.segmentation.xmem.inference import make_geometry, prepare_masks

    video = SyntheticVideo(num_frames, height, width)
    masks = key_masks(video, num_objects)
    cfg = PropagatorConfig(device=device, dtype=precision, short_side=short_side)
    results = []
    for graphs in (False, True):
        prop = XMemPropagator(net, cfg, key_batch=8, directions="forward", cuda_graphs=graphs)
        core, geo = prop.core, make_geometry(height, width, short_side)
        probs = []
        for _rep in range(2):  # the second pass replays the captured graphs
            state = core.new_state(num_objects)
            probs = []
            for t0 in range(0, num_frames, 8):
                idx = list(range(t0, min(num_frames, t0 + 8)))
                feats = core.encode_frames(prop._upload(np.stack(video.get_frames(idx)), geo, pad=graphs))
                for t, feat in zip(idx, feats):
                    mask = None
                    if t == 0:
                        m = torch.from_numpy(np.stack([masks[o] for o in sorted(masks)])).to(device)
                        mask = prepare_masks(m, geo)
                    probs.append(core.step(state, feat, mask=mask, end=t == num_frames - 1).float().cpu())
        results.append(torch.stack(probs))
    diff = (results[0] - results[1]).abs().max().item()
    agree = (results[0].argmax(1) == results[1].argmax(1)).float().mean().item()
    return (f"check {precision} {num_objects} obj {num_frames} fr: max |prob eager - prob graphs| = {diff:.2e}, "
            f"label agreement {100 * agree:.4f}%")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: tiny networks, small frames, few frames")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --quick)")
    ap.add_argument("--backends", nargs="+", default=["xmem", "sam2_video"], choices=["xmem", "sam2_video"])
    ap.add_argument("--frames", nargs="+", type=int, default=None, help="default 300 1500")
    ap.add_argument("--sam2-frames", nargs="+", type=int, default=None, help="SAM2 frame counts (default 300)")
    ap.add_argument("--objects", nargs="+", type=int, default=[1, 3])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--key-batch", nargs="+", type=int, default=[8], help="XMem frames key-encoded per batch")
    ap.add_argument("--graphs", nargs="+", default=["auto"], choices=["auto", "on", "off"],
                    help="XMem CUDA graphs (auto: the propagator's default)")
    ap.add_argument("--channels-last", nargs="+", default=["auto"], choices=["auto", "on", "off"])
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--output", default=None, help="also write the rows as JSON here")
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="profile XMem runs (first precision/object count/key batch; each --graphs value) into FILE")
    ap.add_argument("--profile-frames", type=int, default=100)
    ap.add_argument("--check", action="store_true", help="CUDA graphs vs eager on the first precision(s), 60 frames")
    args = ap.parse_args(argv)

    import torch

    from videoseg_r1.config import PropagatorConfig
    from videoseg_r1.segmentation.propagation import XMemPropagator
    from videoseg_r1.segmentation.sam2_video import Sam2VideoPropagator

    device = args.device or ("cpu" if args.quick else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available; run with --quick for the CPU smoke test", file=sys.stderr)
        return 2
    if args.quick:
        frames = args.frames or [12]
        sam2_frames = args.sam2_frames or [4]
        height, width = 48, 80
        short_side = 32
    else:
        frames = args.frames or [300, 1500]
        sam2_frames = args.sam2_frames or [300]
        height, width = args.height, args.width
        short_side = 480
    torch.backends.cudnn.benchmark = True
    flag = {"auto": None, "on": True, "off": False}
    if args.check or args.profile:
        net = build_xmem(args.quick)
        if args.check:
            for precision in args.precisions:
                for num_objects in args.objects:
                    print(check_graphs(net, device, precision, num_objects, 60, height, width, short_side), flush=True)
        if args.profile:
            for graphs in args.graphs:
                print(profile_xmem(net, device, args.precisions[0], args.objects[0], args.key_batch[0],
                                   args.profile_frames, height, width, short_side, args.profile,
                                   cuda_graphs=flag[graphs]), flush=True)
        del net
        torch.cuda.empty_cache()
        if not args.output and args.frames is None:
            return 0
    rows = []
    header = (f"{'backend':<12}{'objects':>8}{'frames':>8}{'precision':>10}{'key_batch':>10}{'graphs':>7}{'cl':>5}"
              f"{'frames/s':>10}{'peak GB':>9}")
    print(f"device: {torch.cuda.get_device_name() if device.startswith('cuda') else 'cpu'}; "
          f"video {height}x{width}; random weights; torch {torch.__version__}")
    print(header)
    print("-" * len(header))
    for backend in args.backends:
        if backend == "xmem":
            net = build_xmem(args.quick)
        else:
            sam_model, sam_processor = build_sam2_video(args.quick)
        for precision in args.precisions:
            for num_frames in (frames if backend == "xmem" else sam2_frames):
                video = SyntheticVideo(num_frames, height, width)
                for num_objects in args.objects:
                    variants = [(kb, g, cl) for kb in args.key_batch for g in args.graphs for cl in args.channels_last]
                    for key_batch, graphs, cl in (variants if backend == "xmem" else [(1, "-", "-")]):
                        cfg = PropagatorConfig(device=device, dtype=precision, short_side=short_side)
                        if backend == "xmem":
                            def make(cfg=cfg, key_batch=key_batch, graphs=graphs, cl=cl):
                                return XMemPropagator(net, cfg, key_batch=key_batch, directions="forward",
                                                      cuda_graphs=flag[graphs], channels_last=flag[cl])
                        else:
                            def make(cfg=cfg):
                                return Sam2VideoPropagator(cfg, model=sam_model, processor=sam_processor,
                                                           directions="forward")
                        result = run_case(make, video, num_objects, device, key_batch)
                        row = {"backend": backend, "objects": num_objects, "precision": precision,
                               "key_batch": key_batch, "graphs": graphs, "channels_last": cl, **result}
                        rows.append(row)
                        print(f"{backend:<12}{num_objects:>8}{result['frames']:>8}{precision:>10}{key_batch:>10}"
                              f"{graphs:>7}{cl:>5}{result['fps']:>10.1f}{result['peak_gb']:>9.3f}", flush=True)
        if backend == "xmem":
            del net
        else:
            del sam_model
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
