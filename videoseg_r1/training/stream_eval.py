"""Learning curves of a reasoner on held-out stream samples: does it ground, and does it find the time?

``evaluate_stream(model, processor, config, num_samples)`` draws the first ``num_samples`` samples of
a ``training.stream`` stream (use ``split='valid'`` or ``'test_ood'``: videos training never sees),
answers each greedily in batches, reads the answers with THE parser and scores them per task:

* ``refer`` / ``reasoning``: ``iou50`` = share of ground-truth objects whose matched prediction has
  box IoU > 0.5 (one-to-one matching on IoU); ``point`` = share whose matched predicted point lies
  within the accuracy reward's point threshold (30 px at 840, scaled to the input) of the
  ground-truth point; ``precision50`` = share of predicted items matched at IoU > 0.5;
  ``accuracy`` = the accuracy reward (0..3, ``rewards.accuracy``, which judges the raw JSON; the
  stream's bare-JSON answers are scored as if inside ``<answer>`` tags); ``parsed`` = answers whose JSON read;
* ``list``: ``iou50`` / ``precision50`` as above over every shape, and ``label`` = share of matched
  shapes whose label is right;
* ``interval``: ``tiou`` = mean temporal IoU (segments inclusive of their last frame) of the answer
  in seconds with the key segment; an unreadable answer, or one in frames, scores 0 and unparsed;
* ``position``: ``abs_err`` = mean |p - p_true| of the relative position, ``parsed``.

:class:`StreamEvalCallback` runs it every ``every_steps`` optimiser steps of a trainer and appends
the numbers (keys ``eval/<task>/<metric>``) to ``train_log.jsonl``. Used by ``training.sft`` /
``training.grpo`` when the job has ``eval:`` settings, and by ``benchmarks/bench_training.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from videoseg_r1.training.stream import StreamConfig, SampleStream

EVAL_SAMPLES = 256  # ours: IoU@0.5 to about +-3 points
EVAL_BATCH = 64
EVAL_MAX_NEW_TOKENS = 256


@dataclass
class EvalSettings:
    """``eval:`` of a job file: held-out stream samples scored every ``every_steps`` steps (0: off)."""

    every_steps: int = 0
    samples: int = EVAL_SAMPLES
    batch_size: int = EVAL_BATCH
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS
    split: str = "valid"
    tasks: dict[str, float] = field(default_factory=dict)  # default: the training stream's tasks
    at_end: bool = True


# ---------------------------------------------------------------- scoring one answer


def _items(text: str, size: int):
    from videoseg_r1.reasoning.parsing import parse_answer

    parsed = parse_answer(text, frame_size_wh=(size, size))
    boxes = [o.box_xyxy for o in parsed.objects if o.box_xyxy is not None]
    points = [o.point_xy if o.point_xy is not None else (math.nan, math.nan) for o in parsed.objects
              if o.box_xyxy is not None]
    return parsed.json_ok, boxes, points


def _matched(pred_boxes, gt_boxes):
    """(pred index, gt index) pairs of the one-to-one matching that maximises the IoU, and the IoUs."""
    from scipy.optimize import linear_sum_assignment

    from videoseg_r1.rewards.matching import box_iou_matrix

    if not pred_boxes or not gt_boxes:
        return [], np.zeros((len(pred_boxes), len(gt_boxes)))
    iou = np.nan_to_num(box_iou_matrix(pred_boxes, gt_boxes))
    rows, cols = linear_sum_assignment(-iou)
    return list(zip(rows.tolist(), cols.tolist())), iou


def score_boxes(text: str, row: dict[str, Any]) -> dict[str, float]:
    """Metrics of one ``refer`` / ``reasoning`` answer (module docstring)."""
    from videoseg_r1.config import RewardConfig
    from videoseg_r1.rewards import accuracy

    size = int(row["frame_size"][0])
    gt = json.loads(row["solution"])
    gt_boxes = [g["bbox_2d"] for g in gt]
    gt_points = [g["point_2d"] for g in gt]
    ok, boxes, points = _items(text, size)
    pairs, iou = _matched(boxes, gt_boxes)
    threshold = RewardConfig().for_frame(size, size).point_distance_threshold_px
    hit = [iou[p, g] > 0.5 for p, g in pairs]
    near = [math.dist(points[p], gt_points[g]) < threshold if all(map(math.isfinite, points[p])) else False
            for p, g in pairs]
    return {"iou50": sum(hit) / len(gt_boxes), "point": sum(near) / len(gt_boxes),
            "precision50": (sum(hit) / len(boxes)) if boxes else 0.0,
            "accuracy": accuracy([text if "<answer>" in text else f"<answer>{text}</answer>"],
                                 solution=[row["solution"]], frame_size=[row["frame_size"]])[0],
            "parsed": float(ok)}


def score_list(text: str, row: dict[str, Any]) -> dict[str, float]:
    from videoseg_r1.reasoning.parsing import load_answer_json

    gt = json.loads(row["completion"][0]["content"])
    size = int(np.asarray(row["images"][0]).shape[1])
    ok, boxes, _ = _items(text, size)
    value, _ = load_answer_json(text)
    labels = [it.get("label") if isinstance(it, dict) else None for it in (value if isinstance(value, list) else [])]
    labels = [lab for lab, it in zip(labels, value or []) if isinstance(it, dict) and "bbox_2d" in it][: len(boxes)]
    pairs, iou = _matched(boxes, [g["bbox_2d"] for g in gt])
    hits = [(p, g) for p, g in pairs if iou[p, g] > 0.5]
    right = [p < len(labels) and labels[p] == gt[g]["label"] for p, g in hits]
    return {"iou50": len(hits) / len(gt), "precision50": len(hits) / len(boxes) if boxes else 0.0,
            "label": (sum(right) / len(hits)) if hits else 0.0, "parsed": float(ok)}


def _true_interval(row) -> tuple[float, float]:
    from videoseg_r1.reasoning.parsing import parse_interval

    got = parse_interval(row["completion"][0]["content"])
    return float(got.start), float(got.end)


def score_interval(text: str, row: dict[str, Any]) -> dict[str, float]:
    from videoseg_r1.reasoning.parsing import parse_interval

    got = parse_interval(text)
    if got.error is not None or got.start is None or got.unit != "seconds":
        return {"tiou": 0.0, "parsed": 0.0}
    a, b = sorted((float(got.start), float(got.end)))
    s, e = _true_interval(row)
    from videoseg_r1.data.synthetic import FPS

    step = 1.0 / FPS  # one frame: the segments are inclusive of their last frame
    inter = max(0.0, min(b, e) - max(a, s) + step)
    union = max(b, e) - min(a, s) + step
    return {"tiou": inter / union if union > 0 else 0.0, "parsed": 1.0}


def score_position(text: str, row: dict[str, Any]) -> dict[str, float]:
    from videoseg_r1.reasoning.parsing import parse_position

    got = parse_position(text)
    truth = parse_position(row["completion"][0]["content"]).value_norm
    if got.value_norm is None:
        return {"abs_err": 1.0, "parsed": 0.0}
    return {"abs_err": abs(float(got.value_norm) - float(truth)), "parsed": 1.0}


SCORERS = {"refer": score_boxes, "reasoning": score_boxes, "list": score_list,
           "interval": score_interval, "position": score_position}


# ---------------------------------------------------------------- answering


def generate_answers(model, processor, rows: list[dict[str, Any]], batch_size: int = EVAL_BATCH,
                     max_new_tokens: int = EVAL_MAX_NEW_TOKENS, num_samples: int = 1,
                     temperature: float | None = None, seed: int = 0) -> list[str]:
    """Answers of ``model`` to the rows' prompts (TRL conversational format, ``images``): greedy, or
    with ``temperature`` ``num_samples`` sampled answers per row (seeded; row-major order)."""
    import torch
    from trl.data_utils import prepare_multimodal_messages

    tok = processor.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = []
    suppress = getattr(model.generation_config, "suppress_tokens", None)
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start: start + batch_size]
            texts = [processor.apply_chat_template(prepare_multimodal_messages(r["prompt"], images=r["images"]),
                                                   tokenize=False, add_generation_prompt=True) for r in chunk]
            images = [im for r in chunk for im in r["images"]]
            inputs = processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(device)
            sampling = dict(do_sample=False) if temperature is None else dict(
                do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0, num_return_sequences=num_samples)
            if temperature is not None:
                torch.manual_seed(seed + start)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, suppress_tokens=suppress,
                                     pad_token_id=tok.pad_token_id, **sampling)
            new = ids[:, inputs["input_ids"].shape[1]:]
            out += tok.batch_decode(new, skip_special_tokens=True)
    finally:
        tok.padding_side = side
        model.train(was_training)
    return out


def evaluate_stream(model, processor, config: StreamConfig, num_samples: int = EVAL_SAMPLES,
                    batch_size: int = EVAL_BATCH, max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
                    return_rows: bool = False) -> dict[str, Any]:
    """Per-task mean metrics on the first ``num_samples`` samples of ``config``'s stream (plus the
    count of each task under ``<task>/n``); with ``return_rows`` also the answers and their scores."""
    stream = SampleStream(config)
    rows = [stream[i] for i in range(num_samples)]
    answers = generate_answers(model, processor, rows, batch_size, max_new_tokens)
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    scored = []
    for row, text in zip(rows, answers):
        scores = SCORERS[row["task"]](text, row)
        scored.append({"task": row["task"], "answer": text, **scores})
        counts[row["task"]] = counts.get(row["task"], 0) + 1
        for k, v in scores.items():
            sums.setdefault(row["task"], {}).setdefault(k, 0.0)
            sums[row["task"]][k] += float(v)
    result: dict[str, Any] = {}
    for task, metrics in sums.items():
        result[f"{task}/n"] = counts[task]
        for k, v in metrics.items():
            result[f"{task}/{k}"] = round(v / counts[task], 4)
    if return_rows:
        result["rows"] = scored
    return result


def held_out_config(train: StreamConfig, settings: EvalSettings) -> StreamConfig:
    """The evaluation stream: ``train``'s sizes and layout on ``settings.split`` videos (another
    seed, so that even a ``train``-split evaluation sees unseen videos)."""
    return replace(train, split=settings.split, seed=train.seed + 1_000_003,
                   tasks=dict(settings.tasks) if settings.tasks else dict(train.tasks))


def stream_eval_callback(config: StreamConfig, settings: EvalSettings, processor, log_path: str | Path):
    """A ``TrainerCallback`` that runs :func:`evaluate_stream` every ``settings.every_steps`` steps (and
    at the end) on the main process and appends ``{"step", "eval/<task>/<metric>": ...}`` to ``log_path``."""
    from transformers import TrainerCallback

    log_path = Path(log_path)

    class StreamEvalCallback(TrainerCallback):
        last = -1

        def _run(self, state, model):
            if not state.is_world_process_zero or state.global_step == self.last or model is None:
                return
            self.last = state.global_step
            result = evaluate_stream(model, processor, config, settings.samples, settings.batch_size,
                                     settings.max_new_tokens)
            row = {"step": state.global_step, **{f"eval/{k}": v for k, v in result.items()}}
            with log_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print("eval " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if settings.every_steps > 0 and state.global_step % settings.every_steps == 0:
                self._run(state, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if settings.at_end:
                self._run(state, model)

    return StreamEvalCallback()
