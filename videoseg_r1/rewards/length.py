"""The paper's difficulty-aware soft length penalty and the penalised total reward (SPEC §2).

Difficulty D in [1, 10] (``difficulty`` column, written by ``videoseg_r1.training.samples``) maps to
easy / medium / hard (D < τ_easy, τ_easy <= D < τ_hard, D >= τ_hard) and to a budget of reasoning
tokens (32 / 64 / 128 by default). L_used = tokens inside ``<think>``. The scale is
``s = max(0, 1 − β·(L_used − L_budget))`` over budget, else 1, and the final reward of a completion
is ``(sum of the five component rewards) × s``.

How this reaches TRL: ``GRPOTrainer`` adds its reward functions with weights, which cannot express a
product. :func:`trl_reward_setup` therefore gives TRL one function, ``videoseg_total`` (weight 1),
whose value IS the penalised total, so the group advantages are computed from it alone; the five
components and ``length_scale`` are passed as well with weight 0: they change nothing in the
advantage, but TRL logs each under ``rewards/<name>/mean`` and ``/std`` every step.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from videoseg_r1.config import RewardConfig
from videoseg_r1.rewards.common import completion_text, think_text

RewardFunc = Callable[..., list[float]]

#: Name under which TRL logs the penalised total (``rewards/videoseg_total/mean``).
TOTAL_REWARD_NAME = "videoseg_total"
#: Name under which TRL logs the length-penalty scale s (``rewards/length_scale/mean``).
LENGTH_SCALE_NAME = "length_scale"


def difficulty_level(difficulty: float | None, config: RewardConfig | None = None) -> str:
    """'easy' if D < τ_easy, 'hard' if D >= τ_hard, else 'medium' (also for a missing D).

    >>> difficulty_level(3.9), difficulty_level(4.0), difficulty_level(6.99), difficulty_level(7.0)
    ('easy', 'medium', 'medium', 'hard')
    """
    config = config or RewardConfig()
    try:
        d = float(difficulty)
    except (TypeError, ValueError):
        return "medium"
    if not math.isfinite(d):
        return "medium"
    if d < config.tau_easy:
        return "easy"
    if d >= config.tau_hard:
        return "hard"
    return "medium"


def length_budget(difficulty: float | None, config: RewardConfig | None = None) -> int:
    """Reasoning-token budget L(D): 32 / 64 / 128 for easy / medium / hard by default."""
    config = config or RewardConfig()
    level = difficulty_level(difficulty, config)
    return {"easy": config.budget_easy, "medium": config.budget_medium, "hard": config.budget_hard}[level]


def length_scale(tokens_used: int, budget: int, beta: float) -> float:
    """s = max(0, 1 − β·(L_used − L_budget)) when L_used > L_budget, else 1.

    >>> length_scale(64, 64, 0.01), length_scale(10, 64, 0.01), length_scale(114, 64, 0.01)
    (1.0, 1.0, 0.5)
    >>> length_scale(500, 64, 0.01)
    0.0
    """
    if tokens_used <= budget:
        return 1.0
    return max(0.0, 1.0 - beta * (tokens_used - budget))


def _token_counter(tokenizer: Any | None) -> Callable[[str], int]:
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor carries its tokenizer
    if tok is None:
        return lambda text: len(text.split())

    def count(text: str) -> int:
        if not text:
            return 0
        return len(tok(text, add_special_tokens=False)["input_ids"])

    return count


def count_think_tokens(text: str, tokenizer: Any | None = None) -> int:
    """Tokens inside ``<think>`` (to ``</think>``, or to the end if unclosed; 0 without ``<think>``).

    With ``tokenizer`` (a tokenizer or a processor) the count is in model tokens; without one it
    falls back to whitespace-separated words (documented approximation for tests and tools).
    """
    return _token_counter(tokenizer)(think_text(text))


def length_scales(
    completions: list[Any],
    difficulty: list[Any] | None = None,
    *,
    reward_config: RewardConfig | None = None,
    tokenizer: Any | None = None,
) -> tuple[list[float], list[int]]:
    """(scale s, think-token count) per completion."""
    config = reward_config or RewardConfig()
    count = _token_counter(tokenizer)
    difficulty = difficulty if difficulty is not None else [None] * len(completions)
    scales, used = [], []
    for completion, d in zip(completions, difficulty):
        try:
            n_tokens = count(think_text(completion_text(completion)))
        except Exception:
            n_tokens = 0
        used.append(n_tokens)
        if not config.use_length_penalty:
            scales.append(1.0)
        else:
            scales.append(length_scale(n_tokens, length_budget(d, config), config.length_penalty_beta))
    return scales, used


def make_length_scale_reward(reward_config: RewardConfig | None = None, tokenizer: Any | None = None) -> RewardFunc:
    """A TRL-style function returning s per completion (logged with weight 0 as ``length_scale``)."""

    def length_scale_reward(completions, solution=None, difficulty=None, **columns) -> list[float]:
        """Length-penalty scale s in [0, 1] (see module docstring); 1 means within budget."""
        return length_scales(completions, difficulty, reward_config=reward_config, tokenizer=tokenizer)[0]

    length_scale_reward.__name__ = LENGTH_SCALE_NAME
    return length_scale_reward


def make_total_reward(
    components: dict[str, RewardFunc],
    reward_config: RewardConfig | None = None,
    tokenizer: Any | None = None,
) -> RewardFunc:
    """The penalised total: ``(Σ components) × s``, as one TRL reward function named ``videoseg_total``.

    Worked example (D = 2 -> easy, budget 32, β = 0.01, whitespace counting): a completion scoring
    think 1 + answer 2 + accuracy 3 + non-repeat 1 + negative 1 = 8 with 52 words inside
    ``<think>`` has s = 1 − 0.01·(52 − 32) = 0.8, so ``videoseg_total`` = 6.4; with 32 words, 8.0.
    """
    config = reward_config or RewardConfig()

    def videoseg_total(completions, solution=None, difficulty=None, **columns) -> list[float]:
        n = len(completions)
        sums = [0.0] * n
        for fn in components.values():
            try:
                values = fn(completions, solution=solution, difficulty=difficulty, **columns)
            except Exception:  # components never raise; belt and braces
                values = [0.0] * n
            sums = [s + (float(v) if v is not None and math.isfinite(float(v)) else 0.0) for s, v in zip(sums, values)]
        scales, used = length_scales(completions, difficulty, reward_config=config, tokenizer=tokenizer)
        log_metric = columns.get("log_metric")
        if callable(log_metric) and used:
            try:
                log_metric("think_tokens/mean", sum(used) / len(used))
            except Exception:
                pass
        return [s * k for s, k in zip(sums, scales)]

    videoseg_total.__name__ = TOTAL_REWARD_NAME
    videoseg_total.__doc__ = make_total_reward.__doc__
    return videoseg_total
