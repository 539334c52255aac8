#!/usr/bin/env python
"""Does the soft length penalty dominate GRPO's advantages when a group's accuracy ties? (issue 14)

Samples ``--group`` completions (temperature 1, seeded) of a reasoner for ``--prompts`` GRPO prompts
of the synthetic stream, scores them with the project's rewards (``videoseg_r1.rewards``: the five
components and the paper's penalised total), and computes the advantages two ways:

* ``grpo``: TRL's ``scale_rewards="group"`` (what the paper's GRPO and our default do):
  A = (r - mean_group) / (std_group + 1e-4);
* ``dr_grpo``: Dr. GRPO's unscaled A = r - mean_group (TRL ``scale_rewards="none"``).

For the groups whose accuracy is the same for every completion (typically all 0), it prints how
large the advantages are and how much of them the length scale s explains (R^2 of A on s inside the
group), against the groups where accuracy differs. Prints a table; CPU is fine for a small model:

    python benchmarks/length_penalty_advantages.py --reasoner models/synthetic-small/reasoner --prompts 48
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reasoner", default=str(REPO / "models" / "synthetic-small" / "reasoner"))
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--batch", type=int, default=4, help="prompts per generate call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from videoseg_r1.rewards import REWARD_FUNCS, total_reward
    from videoseg_r1.training.samples import SampleConfig
    from videoseg_r1.training.stream import SampleStream, StreamConfig
    from videoseg_r1.training.stream_eval import generate_answers

    torch.manual_seed(args.seed)
    model = AutoModelForImageTextToText.from_pretrained(args.reasoner).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.reasoner)
    samples = SampleConfig(model_input_size=224, context_frame_size=112, num_key_frames=2, num_reference_frames=2)
    stream = SampleStream(StreamConfig(tasks={"reasoning": 1.0}, split="valid", seed=args.seed, frames=32,
                                       samples=samples))
    rows = [stream[i] for i in range(args.prompts)]
    texts = generate_answers(model, processor, rows, batch_size=args.batch, max_new_tokens=args.max_new_tokens,
                             num_samples=args.group, temperature=1.0, seed=args.seed)
    g = args.group
    cols = {k: [r[k] for r in rows for _ in range(g)] for k in ("solution", "gt_mask_rle", "frame_size", "difficulty")}
    acc = np.array(REWARD_FUNCS["accuracy"](texts, **cols)).reshape(-1, g)
    total = np.array(total_reward(texts, tokenizer=processor, **cols)).reshape(-1, g)
    from videoseg_r1.rewards.length import make_length_scale_reward

    scale = np.array(make_length_scale_reward(None, processor)(texts, **cols)).reshape(-1, g)
    ties = np.all(acc == acc[:, :1], axis=1)
    lines = [f"reasoner {args.reasoner}; {len(rows)} prompts x {g} completions, temperature 1, seed {args.seed}",
             f"groups whose accuracy ties: {int(ties.sum())} of {len(rows)} (mean accuracy {acc.mean():.3f} of 3)",
             f"mean length scale s {scale.mean():.3f}; groups whose s varies: {int((scale.std(1) > 0).sum())}", "",
             "| advantages | groups | mean abs A | share of A^2 explained by s (R^2) |", "| --- | --- | ---: | ---: |"]
    for name, scaled in (("grpo (std-scaled)", True), ("dr_grpo (unscaled)", False)):
        centred = total - total.mean(1, keepdims=True)
        adv = centred / (total.std(1, keepdims=True) + 1e-4) if scaled else centred
        for label, mask in (("accuracy ties", ties), ("accuracy differs", ~ties)):
            if not mask.any():
                continue
            a, s = adv[mask], scale[mask]
            r2 = []
            for ai, si in zip(a, s):
                if np.var(ai) > 1e-12 and np.var(si) > 1e-12:
                    r2.append(np.corrcoef(ai, si)[0, 1] ** 2)
            lines.append(f"| {name} | {label} ({int(mask.sum())}) | {np.abs(a).mean():.3f} | "
                         f"{np.mean(r2) if r2 else float('nan'):.3f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
