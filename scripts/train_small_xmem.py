#!/usr/bin/env python
"""Train the small XMem of the shipped synthetic models (issue 8): mask propagation on synthetic clips.

One command, resumable: run it again (same ``--out``) and it continues from the latest
``OUT/checkpoints/step-*.pt`` (``--resume auto``, the default) until ``--steps`` are done, then writes
``OUT/final/xmem.safetensors`` (flat state dict with the official XMem names, fp16 by default;
``load_xmem`` and ``PropagatorConfig.checkpoint`` accept it), ``OUT/train_log.json`` (loss every
``--log-every`` steps, validation J on the synthetic ``valid`` split every ``--eval-every``) and
``OUT/summary.json``. The recipe (official XMem stage training in miniature: 8-frame clips, up to 3
objects, memory of the first + random earlier frames, sensory memory, bootstrapped CE + dice) is
documented in ``videoseg_r1/training/xmem_training.py``. Data are generated on the fly.

GPU run (default widths: ~3.3 M parameters, ~6.5 MB in fp16, 160x128 clips); ``--max-minutes``
stops with a checkpoint inside one device call, so repeat the command until it prints the final file::

    python scripts/train_small_xmem.py --out runs/small_xmem --steps 6000 --batch-size 16 --workers 12 \\
        --max-minutes 9

Minuscule CPU smoke run (what tests/test_train_small_segmenters.py does, a few seconds)::

    python scripts/train_small_xmem.py --out /tmp/xmem_small --steps 3 --batch-size 2 --data-size 64x48 \\
        --clip-frames 4 --video-frames 6 --val-videos 2 --val-frames 4 --eval-every 2 --save-every 2 --tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

TINY = dict(key_dim=8, value_dim=16, hidden_dim=8, backbone_width=8, decoder_dims=(16, 8, 8))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from videoseg_r1.training.segmenter_training import add_training_arguments
    from videoseg_r1.training.xmem_training import SmallXMemConfig, XMemTrainConfig

    d, m = XMemTrainConfig(out=""), SmallXMemConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(p, d, batch_help="clips per step")
    p.add_argument("--data-size", default=d.data_size, help="synthetic frame size WxH (multiples of 16)")
    p.add_argument("--clip-frames", type=int, default=d.clip_frames)
    p.add_argument("--video-frames", type=int, default=d.video_frames, help="frames of each generated video")
    p.add_argument("--max-skip", type=int, default=d.max_skip, help="largest gap between sampled frames")
    p.add_argument("--max-objects", type=int, default=d.max_objects)
    p.add_argument("--num-ref-frames", type=int, default=d.num_ref_frames, help="memory frames read per frame")
    p.add_argument("--deep-update-prob", type=float, default=d.deep_update_prob)
    p.add_argument("--val-videos", type=int, default=d.val_videos)
    p.add_argument("--val-frames", type=int, default=d.val_frames)
    a = p.add_argument_group("architecture (fixed at step 0; a resumed run keeps the checkpoint's)")
    a.add_argument("--tiny", action="store_true", help="a minuscule network for CPU tests")
    a.add_argument("--key-dim", type=int, default=m.key_dim)
    a.add_argument("--value-dim", type=int, default=m.value_dim)
    a.add_argument("--hidden-dim", type=int, default=m.hidden_dim)
    a.add_argument("--backbone-width", type=int, default=m.backbone_width)
    a.add_argument("--decoder-dims", default=",".join(map(str, m.decoder_dims)))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from videoseg_r1.training.segmenter_training import training_kwargs
    from videoseg_r1.training.xmem_training import SmallXMemConfig, XMemTrainConfig, train_xmem

    args = parse_args(argv)
    if args.tiny:
        model = SmallXMemConfig(**TINY)
    else:
        model = SmallXMemConfig(key_dim=args.key_dim, value_dim=args.value_dim, hidden_dim=args.hidden_dim,
                                backbone_width=args.backbone_width,
                                decoder_dims=tuple(int(v) for v in args.decoder_dims.split(",")))
    cfg = XMemTrainConfig(**training_kwargs(args), data_size=args.data_size, clip_frames=args.clip_frames,
                          video_frames=args.video_frames, max_skip=args.max_skip, max_objects=args.max_objects,
                          num_ref_frames=args.num_ref_frames, deep_update_prob=args.deep_update_prob,
                          val_videos=args.val_videos, val_frames=args.val_frames, model=model)
    summary = train_xmem(cfg)
    print(f"step {summary['step']}/{summary['steps']}, valid J {summary['final_valid_j']}"
          + (f", final: {summary['final']}" if summary.get("final") else " (not finished: run again)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
