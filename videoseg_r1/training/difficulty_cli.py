"""``videoseg-r1 rate-difficulty``: difficulty D of every training expression, cached in a JSON file.

    videoseg-r1 rate-difficulty --benchmark revos --data-root data/ReVOS --output runs/difficulty.json \\
        --rater mllm --model Qwen/Qwen2.5-VL-7B-Instruct
    videoseg-r1 rate-difficulty --benchmark mevis --data-root data/MeViS --output d.json   # heuristic

The MLLM rater (the paper's) sees ``--num-frames`` uniformly spread frames as a video with the query
and ``templates/difficulty.txt``; unreadable answers fall back to the annotation heuristic (recorded
as ``heuristic_fallback``). Synthetic expressions keep their own D. Re-running resumes: expressions
already in the output file are skipped. ``train --difficulty-file`` reads the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

DEFAULT_RATER_FRAMES = 8  # frames shown to the rater; ours
DEFAULT_RATER_FRAME_SIZE = 448  # pixels (square); ours


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark", required=True, help="revos, mevis, refytvos, refdavis or synthetic")
    parser.add_argument("--data-root", required=True, help="folder of the benchmark")
    parser.add_argument("--split", default="train")
    parser.add_argument("--output", required=True, help="JSON cache of D per expression (resumed if present)")
    parser.add_argument("--rater", choices=["heuristic", "mllm"], default="heuristic")
    parser.add_argument("--model", default=None, help="rater model (hub id or folder) for --rater mllm")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-frames", type=int, default=DEFAULT_RATER_FRAMES)
    parser.add_argument("--frame-size", type=int, default=DEFAULT_RATER_FRAME_SIZE)
    parser.add_argument("--num-samples", type=int, default=1, help="rater answers averaged per expression")
    parser.add_argument("--limit", type=int, default=None, help="rate at most this many new expressions")
    parser.add_argument("--save-every", type=int, default=20, help="write the cache every N expressions")


def _frames_for(reader, video_name: str, num_frames: int):
    import numpy as np

    def load():
        video = reader.open_video(video_name)
        n = len(video)
        idx = sorted(set(np.linspace(0, n - 1, num=min(n, num_frames)).round().astype(int).tolist()))
        ts = video.timestamps()
        return video.get_frames(idx), [float(ts[i]) for i in idx]

    return load


def run(args: argparse.Namespace) -> int:
    from videoseg_r1.training.difficulty import DifficultyCache, MLLMRater, expression_difficulty, sample_key
    from videoseg_r1.training.samples import load_reader

    reader = load_reader(args.benchmark, args.data_root, args.split)
    cache = DifficultyCache(args.output)
    rater = None
    if args.rater == "mllm":
        from videoseg_r1.config import ReasonerConfig
        from videoseg_r1.reasoning.reasoner import Reasoner

        cfg = ReasonerConfig(device=args.device)
        reasoner = Reasoner.from_pretrained(args.model or cfg.model, cfg)
        rater = MLLMRater.from_reasoner(reasoner, num_samples=args.num_samples, frame_size=args.frame_size)
    sources: Counter = Counter()
    done = 0
    for expr in reader.expressions():
        if sample_key(args.benchmark, expr.video, expr.exp_id) in cache:
            continue
        if args.limit is not None and done >= args.limit:
            break
        record = expression_difficulty(reader, expr, args.benchmark, cache=cache, rater=rater,
                                       frames_for_rater=_frames_for(reader, expr.video, args.num_frames))
        sources[record.source] += 1
        done += 1
        if done % max(1, args.save_every) == 0:
            cache.save()
    cache.save()
    print(json.dumps({"output": args.output, "rated": done, "sources": dict(sources), "total_cached": len(cache)}))
    if done == 0 and len(cache) == 0:
        print("no expression rated: the benchmark has no expressions in this split", file=sys.stderr)
    return 0
