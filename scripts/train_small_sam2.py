#!/usr/bin/env python
"""Train the small SAM2 of the shipped synthetic models (issue 8): box + points -> mask on synthetic frames.

One command, resumable: run it again (same ``--out``) and it continues from the latest
``OUT/checkpoints/step-*.pt`` (``--resume auto``, the default) until ``--steps`` are done, then writes
``OUT/final/`` (a folder ``Sam2Model.from_pretrained`` / ``Sam2Processor.from_pretrained`` and
``KeyFrameSegmenter`` load; safetensors in bf16), ``OUT/train_log.json`` (loss terms every
``--log-every`` steps, validation mIoU on the synthetic ``valid`` split every ``--eval-every``) and
``OUT/summary.json``. The recipe (prompt sampling, focal + dice on the best multimask candidate, IoU
MSE, AdamW, bf16 autocast on CUDA) is documented in ``videoseg_r1/training/segmenter_training.py``.
Data are generated on the fly (train split, seeded by sample index); no files are needed.

GPU run (default architecture: ~3.3 M parameters, 256 px input, ~6.5 MB in bf16); ``--max-minutes``
stops with a checkpoint inside one device call, so repeat the command until it prints the final folder::

    python scripts/train_small_sam2.py --out runs/small_sam2 --steps 4000 --batch-size 64 --workers 12 \\
        --max-minutes 9

Minuscule CPU smoke run (what tests/test_train_small_segmenters.py does, a few seconds)::

    python scripts/train_small_sam2.py --out /tmp/sam2_small --steps 3 --batch-size 2 --data-size 64x48 \\
        --video-frames 4 --val-samples 4 --eval-every 2 --save-every 2 --tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

TINY = dict(image_size=64, hiera_hidden=8, hiera_dims=(8, 16, 32, 64), hiera_blocks=(1, 1, 2, 1),
            hiera_heads=(1, 1, 1, 1), hiera_windows=(4, 4, 4, 4), global_blocks=(3,), hidden=16, decoder_mlp=32,
            decoder_heads=1, iou_hidden=16)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from videoseg_r1.training.segmenter_training import Sam2TrainConfig, SmallSam2Config, add_training_arguments

    d, m = Sam2TrainConfig(out=""), SmallSam2Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(p, d)
    p.add_argument("--data-size", default=d.data_size, help="synthetic frame size WxH")
    p.add_argument("--video-frames", type=int, default=d.video_frames, help="frames per generated video")
    p.add_argument("--per-video", type=int, default=d.per_video, help="samples drawn from each generated video")
    p.add_argument("--val-samples", type=int, default=d.val_samples)
    a = p.add_argument_group("architecture (fixed at step 0; a resumed run keeps the checkpoint's)")
    a.add_argument("--tiny", action="store_true", help="a minuscule architecture for CPU tests")
    a.add_argument("--image-size", type=int, default=m.image_size)
    a.add_argument("--hiera-hidden", type=int, default=m.hiera_hidden)
    a.add_argument("--hiera-dims", type=_ints, default=m.hiera_dims)
    a.add_argument("--hiera-blocks", type=_ints, default=m.hiera_blocks)
    a.add_argument("--hiera-heads", type=_ints, default=m.hiera_heads)
    a.add_argument("--hiera-windows", type=_ints, default=m.hiera_windows)
    a.add_argument("--global-blocks", type=_ints, default=m.global_blocks)
    a.add_argument("--hidden", type=int, default=m.hidden, help="prompt encoder / mask decoder width")
    a.add_argument("--decoder-mlp", type=int, default=m.decoder_mlp)
    a.add_argument("--decoder-heads", type=int, default=m.decoder_heads)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from videoseg_r1.training.segmenter_training import (Sam2TrainConfig, SmallSam2Config, train_sam2,
                                                         training_kwargs)

    args = parse_args(argv)
    if args.tiny:
        model = SmallSam2Config(**TINY)
    else:
        model = SmallSam2Config(image_size=args.image_size, hiera_hidden=args.hiera_hidden, hiera_dims=args.hiera_dims,
                                hiera_blocks=args.hiera_blocks, hiera_heads=args.hiera_heads,
                                hiera_windows=args.hiera_windows, global_blocks=args.global_blocks, hidden=args.hidden,
                                decoder_mlp=args.decoder_mlp, decoder_heads=args.decoder_heads, iou_hidden=args.hidden)
    cfg = Sam2TrainConfig(**training_kwargs(args), data_size=args.data_size, video_frames=args.video_frames,
                          per_video=args.per_video, val_samples=args.val_samples, model=model)
    summary = train_sam2(cfg)
    print(f"step {summary['step']}/{summary['steps']}, valid mIoU {summary['final_valid_miou']}"
          + (f", final: {summary['final']}" if summary.get("final") else " (not finished: run again)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
