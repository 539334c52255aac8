"""GRPO rollouts on the decode engine (``TrainJobConfig.rollouts``) against TRL's own generate path.

The tiny random Qwen2.5-VL and the synthetic samples (three images per prompt, prompts of different
lengths) come from ``test_training``'s fixtures; ``top_k=1`` makes sampling deterministic, so the
engine's completions must equal ``generate``'s token for token.
"""

import json

import pytest
import torch

from test_training import _changed, _params, samples, tiny_model, tiny_trainer  # noqa: F401 - fixtures
from videoseg_r1.reasoning import decode
from videoseg_r1.training.grpo import ENGINE_MESSAGE, _as_tensors, build_grpo_trainer, rollout_group_size
from videoseg_r1.training.job import LoraSettings, TrainJobConfig, load_job_config

GREEDY = dict(max_completion_length=24, top_k=1, gradient_checkpointing=False, per_device_train_batch_size=4)


def _trainer(tiny_model, samples, tmp_path, rollouts="engine", **kw):
    cfg = TrainJobConfig(model=tiny_model, prompts_per_step=2, num_generations=4, rollouts=rollouts, **kw)
    cfg.trainer = dict(GREEDY, max_steps=1)
    return build_grpo_trainer(cfg, samples[0], tmp_path / rollouts)


def _tokenize(trainer, ds, rows):
    """What ``_generate`` hands ``_generate_single_turn``: prompt ids, images per prompt, fields."""
    from trl.data_utils import prepare_multimodal_messages

    return trainer._tokenize_prompts([prepare_multimodal_messages(ds[r]["prompt"], images=ds[r]["images"])
                                      for r in rows])


@pytest.fixture
def engine_calls(monkeypatch):
    """Every ``DecodeEngine.generate`` call: (engine, args, kwargs, output)."""
    calls, original = [], decode.DecodeEngine.generate

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append((self, args, kwargs, out))
        return out

    monkeypatch.setattr(decode.DecodeEngine, "generate", spy)
    return calls


@pytest.fixture(scope="module")
def engine_trainer(tiny_model, samples, tmp_path_factory):
    return _trainer(tiny_model, samples, tmp_path_factory.mktemp("engine"))


def _both(trainer, rows, k, ds):
    ids, images, fields = _tokenize(trainer, ds, rows)
    ours, lp = trainer._generate_single_turn(ids, images, fields, k)
    theirs, _ = super(type(trainer), trainer)._generate_single_turn(ids, images, fields, k)
    assert lp is None
    return ours, theirs


def test_engine_rollouts_equal_generate(engine_trainer, samples, engine_calls, capsys):
    ds, _ = samples
    trainer = engine_trainer
    ids, _, _ = _tokenize(trainer, ds, range(4))
    assert len({len(x) for x in ids}) > 1  # left padding is exercised
    # four distinct prompts (three images each): B=4, K=1
    ours, theirs = _both(trainer, [0, 1, 2, 3], 4, ds)
    assert ours == theirs and len({tuple(c) for c in ours}) > 1
    first = ours
    assert engine_calls[-1][2]["num_samples"] == 1 and engine_calls[-1][1][0].shape[0] == 4
    assert ENGINE_MESSAGE in capsys.readouterr().out
    # TRL's groups (each prompt num_generations times in a row): one prefill per group, K=4
    grouped = [2] * 4 + [0] * 4
    ours, theirs = _both(trainer, grouped, 4, ds)
    assert ours == theirs and ours[:4] == [ours[0]] * 4 and ours[0] != ours[4]
    assert engine_calls[-1][2]["num_samples"] == 4 and engine_calls[-1][1][0].shape[0] == 2
    # rows that do not split into groups of num_generations: one row per prompt, same ids
    ungrouped, _ = _both(trainer, grouped, 3, ds)
    assert engine_calls[-1][2]["num_samples"] == 1 and ungrouped == ours
    # an EOS id the greedy rows reach: both paths end there, the EOS kept and nothing after it
    # (prompt 2's earliest token, not its last, that some other prompt's row never makes)
    eos = next(t for t in first[2][:-1] if any(t not in row for row in first[:2] + first[3:]))
    saved = trainer.eos_token_ids, trainer.generation_config.eos_token_id
    try:
        trainer.eos_token_ids = [eos]
        trainer.generation_config.eos_token_id = [eos]
        ours, theirs = _both(trainer, [0, 1, 2, 3], 4, ds)
    finally:
        trainer.eos_token_ids, trainer.generation_config.eos_token_id = saved
    assert ours == theirs and ours[2][-1] == eos and len(ours[2]) == first[2].index(eos) + 1 < len(first[2])
    assert any(len(c) == GREEDY["max_completion_length"] for c in ours)  # rows without it run to the end
    assert len(engine_calls) == 4 and len({id(c[0]) for c in engine_calls}) == 1  # one engine, reused
    # sampling draws from the global RNG, as generate does: a seeded run repeats its rollouts
    trainer.generation_config.top_k = 0
    try:
        runs = []
        for _ in range(2):
            torch.manual_seed(5)
            runs.append(_both(trainer, grouped, 4, ds)[0])
    finally:
        trainer.generation_config.top_k = 1
    assert runs[0] == runs[1] and len({tuple(c) for c in runs[0][:4]}) > 1


def test_groups_need_identical_prompts_and_pixels(engine_trainer, samples):
    ds, _ = samples
    ids, images, fields = _tokenize(engine_trainer, ds, [0, 0, 2, 2])
    fields = _as_tensors(fields)
    assert rollout_group_size(ids, images, fields, 2) == 2
    assert rollout_group_size(ids, images, fields, 4) == 1  # prompts 0 and 2 differ
    assert rollout_group_size(ids, images, fields, 3) == 1  # 4 rows are not groups of 3
    assert rollout_group_size(ids, None, fields, 2) == 1  # pixels cannot be split per prompt
    rows = fields["image_grid_thw"].prod(-1)
    per_prompt = int(rows[:3].sum())
    other = dict(fields, pixel_values=fields["pixel_values"].clone())
    other["pixel_values"][per_prompt + 1] += 1  # second copy of prompt 0: other pixels
    assert rollout_group_size(ids, images, other, 2) == 1
    other = dict(fields, image_grid_thw=fields["image_grid_thw"].clone())
    assert other["image_grid_thw"][3].tolist() == [1, 4, 4]
    other["image_grid_thw"][3] = torch.tensor([1, 2, 8])  # same pixel rows, another layout
    assert rollout_group_size(ids, images, other, 2) == 1


def test_run_grpo_on_the_engine(tiny_model, tiny_trainer, samples, tmp_path, engine_calls, capsys):
    from videoseg_r1.training.grpo import LOG_FILE, run_grpo

    ds, _ = samples
    cfg = TrainJobConfig(model=tiny_model, prompts_per_step=2, num_generations=4, rollouts="engine")
    cfg.trainer = dict(tiny_trainer, max_steps=2)
    out = tmp_path / "grpo"
    trainer = run_grpo(cfg, ds, out, save_final=False)
    assert capsys.readouterr().out.count(ENGINE_MESSAGE) == 1
    # one rollout call per step (8 completions: 2 prompts x 4), one prefill per prompt, one engine
    assert [c[2]["num_samples"] for c in engine_calls] == [4, 4]
    assert [c[1][0].shape[0] for c in engine_calls] == [2, 2]
    assert len({id(c[0]) for c in engine_calls}) == 1 and engine_calls[0][0] is trainer.decode_engine
    suppressed = set(tiny_trainer["generation_kwargs"]["suppress_tokens"])  # all but '.' and 'a'
    rows = [row for c in engine_calls for row in c[3].token_ids]
    assert len(rows) == 16 and all(len(row) == 8 and not suppressed & set(row) for row in rows)
    logs = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    step_logs = [row for row in logs if "loss" in row]
    assert [row["step"] for row in step_logs] == [1, 2]
    assert all("reward" in row and "rewards/non_repeat/mean" in row for row in step_logs)
    model = trainer.accelerator.unwrap_model(trainer.model)
    after = {k: v.detach() for k, v in model.state_dict().items()}
    before = _params(tiny_model)
    assert any(k.startswith(("model.language_model", "lm_head")) for k in _changed(before, after))
    # the engine built at step 1 sees the trained weights: same ids and likelihoods as generate and
    # as a fresh engine on the trained model, unlike an engine on the initial weights
    trainer.generation_config.top_k = 1
    trainer.generation_config.suppress_tokens = [3, 4, 5, 6]
    ids, images, fields = _tokenize(trainer, ds, [0] * 4 + [1] * 4)
    ours, _ = trainer._generate_single_turn(ids, images, fields, 4)
    # nothing the engine made under inference_mode stayed on the model
    for module in model.modules():
        for name, value in vars(module).items():
            assert not (isinstance(value, torch.Tensor) and value.is_inference()), name
    assert not any(b.is_inference() for b in model.buffers())
    assert ours == super(type(trainer), trainer)._generate_single_turn(ids, images, fields, 4)[0]
    reused, args, kwargs, res = engine_calls[-1]
    assert reused is engine_calls[0][0]
    fresh = decode.DecodeEngine(model).generate(*args, **kwargs)
    assert fresh.token_ids == res.token_ids
    assert max(abs(a - b) for a, b in zip(fresh.log_likelihoods, res.log_likelihoods)) < 1e-5
    from transformers import AutoModelForImageTextToText

    initial = decode.DecodeEngine(AutoModelForImageTextToText.from_pretrained(tiny_model)).generate(*args, **kwargs)
    assert (initial.token_ids, initial.log_likelihoods) != (res.token_ids, res.log_likelihoods)


def test_rollouts_setting(tiny_model, samples, tmp_path, capsys):
    ds, _ = samples
    auto = _trainer(tiny_model, samples, tmp_path, rollouts="auto")
    assert auto.rollout_reason() == "policy on cpu"
    ids, images, fields = _tokenize(auto, ds, [0, 1])
    completions, _ = auto._generate_single_turn(ids, images, fields, 2)
    assert len(completions) == 2 and auto.decode_engine is None
    assert "rollouts: transformers generate (policy on cpu)" in capsys.readouterr().out
    # 'auto' with the engine chosen: an engine failure switches to TRL's path for the rest of the run
    auto._rollout_why = None

    def broken(*args, **kwargs):
        raise RuntimeError("no graph")

    auto._engine_rollouts = broken
    again, _ = auto._generate_single_turn(ids, images, fields, 2)
    assert len(again) == 2 and auto.rollout_reason() == "the decode engine failed: RuntimeError: no graph"
    assert "rollouts: transformers generate from now on" in capsys.readouterr().out
    assert _trainer(tiny_model, samples, tmp_path, rollouts="generate").rollout_reason() == "rollouts='generate'"
    # LoRA-patched linears: 'engine' refuses clearly ('auto' would use generate)
    lora = _trainer(tiny_model, samples, tmp_path, rollouts="engine", lora=LoraSettings(enabled=True, r=4, alpha=8))
    with pytest.raises(RuntimeError, match="rollouts: engine cannot run this policy: LoRA"):
        lora._generate_single_turn(ids, images, fields, 2)
    for bad in (lambda: TrainJobConfig(rollouts="fast"), lambda: load_job_config(None, rollouts="vllm")):
        with pytest.raises(ValueError, match=r"rollouts must be one of \('auto', 'engine', 'generate'\)"):
            bad()
