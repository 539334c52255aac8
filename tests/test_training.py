"""A few GRPO and SFT steps with the tiny Qwen2.5-VL on synthetic samples (CPU, offline).

The tiny model is random, so its completions would all score the same and GRPO would see zero
advantages. The tests therefore let it sample only '.' and 'a' (``generation_kwargs`` suppress
every other token): eight-token completions such as "a.a.aa.a" then differ in repeated sentences
(the non-repeat reward), which gives each group the reward spread GRPO learns from.
"""

import json
from pathlib import Path

import pytest
import torch

from videoseg_r1.rewards import REWARD_FUNCS, TOTAL_REWARD_NAME, LENGTH_SCALE_NAME
from videoseg_r1.training.job import LORA_LR_FACTOR, LoraSettings, TrainJobConfig, load_job_config
from videoseg_r1.training.samples import SampleConfig

SMALL = dict(model_input_size=56, context_frame_size=56, num_key_frames=1, num_reference_frames=1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from videoseg_r1.reasoning.tiny import save_tiny_reasoner

    return str(save_tiny_reasoner(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def tiny_trainer(tiny_model):
    """Trainer options for a fast CPU run that samples only '.' and 'a'."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    keep = {tok.encode(s, add_special_tokens=False)[0] for s in (".", "a")}
    suppress = [i for i in range(len(tok)) if i not in keep]
    return dict(max_completion_length=8, save_steps=1, gradient_checkpointing=False, learning_rate=5e-2,
                per_device_train_batch_size=4, logging_steps=1, generation_kwargs={"suppress_tokens": suppress})


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from videoseg_r1.data.registry import get_reader
    from videoseg_r1.data.synthetic import generate
    from videoseg_r1.training.samples import build_dataset

    root = generate(tmp_path_factory.mktemp("syn") / "data", num_videos=1, frames=6, size=(64, 48), seed=3,
                    splits=["train"], workers=1)
    ds = build_dataset(get_reader("synthetic", root, "train"), "synthetic", SampleConfig(**SMALL, max_samples=4))
    return ds, root


def _params(model_dir):
    from safetensors.torch import load_file

    return load_file(f"{model_dir}/model.safetensors")


def _changed(before, after):
    return [k for k in before if k in after and not torch.equal(before[k], after[k])]


def test_grpo_steps_log_rewards_change_parameters_and_resume(tiny_model, tiny_trainer, samples, tmp_path):
    from videoseg_r1.reasoning.reasoner import Reasoner
    from videoseg_r1.training.grpo import LOG_FILE, run_grpo

    ds, _ = samples
    cfg = TrainJobConfig(model=tiny_model, prompts_per_step=2, num_generations=4)
    cfg.trainer = dict(tiny_trainer, max_steps=2)
    out = tmp_path / "grpo"
    trainer = run_grpo(cfg, ds, out)
    assert trainer.args.beta == pytest.approx(1e-2) and trainer.args.weight_decay == pytest.approx(0.01)
    assert trainer.args.gradient_accumulation_steps == 2  # 2 prompts x 4 / 4 per device
    logs = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    step_logs = [row for row in logs if "loss" in row]
    assert [row["step"] for row in step_logs] == [1, 2]
    for name in [TOTAL_REWARD_NAME, LENGTH_SCALE_NAME, *REWARD_FUNCS]:
        assert all(f"rewards/{name}/mean" in row for row in step_logs), name
    assert any(row["rewards/non_repeat/std"] > 0 for row in step_logs)
    # the penalised total is what TRL calls "reward" (the components carry weight 0)
    for row in step_logs:
        assert row["reward"] == pytest.approx(row[f"rewards/{TOTAL_REWARD_NAME}/mean"], abs=1e-5)
    before, after = _params(tiny_model), _params(out / "final")
    changed = _changed(before, after)
    assert any(k.startswith(("model.layers", "model.language_model", "lm_head")) for k in changed)
    assert not any("visual" in k for k in changed)  # frozen vision tower
    Reasoner.from_pretrained(out / "final")  # the trained folder loads directly
    # its settings: the sample layout it learned and the frozen stage-1 model (its start), followed
    # back through a chain of stages
    from videoseg_r1.model_settings import read_model_settings, root_base_model, stage_one_model

    settings = read_model_settings(out / "final")
    assert settings["reasoner"]["model_input_size"] == cfg.data.samples.model_input_size
    assert stage_one_model(str(out / "final"), "") == str(Path(tiny_model).resolve())
    assert root_base_model(str(out / "final")) == str(Path(tiny_model).resolve())

    # resume: continues from checkpoint-2 up to step 3
    cfg.trainer["max_steps"] = 3
    resumed = run_grpo(cfg, ds, out, resume="auto", save_final=False)
    assert resumed.state.global_step == 3
    logs = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert [row["step"] for row in logs if "loss" in row] == [1, 2, 3]


def test_grpo_lora_and_sft_steps(tiny_model, tiny_trainer, samples, tmp_path):
    from videoseg_r1.training.grpo import run_grpo
    from videoseg_r1.training.sft import run_sft

    ds, _ = samples
    cfg = TrainJobConfig(model=tiny_model, prompts_per_step=1, num_generations=4,
                         lora=LoraSettings(enabled=True, r=4, alpha=8))
    cfg.trainer = dict(tiny_trainer, max_steps=1)
    run_grpo(cfg, ds, tmp_path / "lora")
    assert (tmp_path / "lora" / "checkpoint-1" / "adapter_model.safetensors").is_file()  # LoRA trained
    merged = _params(tmp_path / "lora" / "final")  # merged into full weights, loadable
    assert not any("lora_" in k for k in merged) and _changed(_params(tiny_model), merged)

    sft_cfg = TrainJobConfig(mode="sft", model=tiny_model, prompts_per_step=2)
    sft_cfg.trainer = dict(max_steps=2, save_steps=2, gradient_checkpointing=False, learning_rate=1e-3)
    sft = run_sft(sft_cfg, ds, tmp_path / "sft")
    losses = [row["loss"] for row in sft.state.log_history if "loss" in row]
    assert len(losses) == 2 and all(l > 0 for l in losses)
    assert _changed(_params(tiny_model), _params(tmp_path / "sft" / "final"))


def test_lora_job_files_use_a_lora_learning_rate():
    """LoRA's best lr is about 10x full fine-tuning's (issue 15 item 13): each LoRA job file's lr is
    LORA_LR_FACTOR x the lr of its full-fine-tuning counterpart, at the alpha the rule was measured with."""
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    full = {"grpo": load_job_config(configs / "grpo_7b_8gpu_zero3.yaml"),
            "sft": load_job_config(configs / "sft_7b_8gpu_zero3.yaml")}
    assert not full["grpo"].lora.enabled and not full["sft"].lora.enabled
    assert full["grpo"].trainer["learning_rate"] == 1e-6  # the paper's (full fine-tuning)
    lora_files = sorted(p for p in configs.glob("*.yaml") if load_job_config(p).lora.enabled)
    assert {p.name for p in lora_files} >= {"grpo_7b_1gpu_lora.yaml", "grpo_3b_1gpu_lora.yaml", "sft_7b_1gpu_lora.yaml"}
    for path in lora_files:
        cfg = load_job_config(path)
        expected = full[cfg.mode].trainer["learning_rate"] * LORA_LR_FACTOR
        assert cfg.trainer["learning_rate"] == pytest.approx(expected), path.name
        assert 1e-5 <= cfg.trainer["learning_rate"] <= 2e-4 and cfg.lora.alpha == 32, path.name


def test_default_learning_rate_of_a_lora_job_is_the_lora_one():
    from videoseg_r1.config import GRPO_LR
    from videoseg_r1.training.job import SFT_LR, trainer_defaults

    full, lora = TrainJobConfig(), TrainJobConfig(lora=LoraSettings(enabled=True))
    assert trainer_defaults(full, False, 8, 8, GRPO_LR)["learning_rate"] == GRPO_LR
    assert trainer_defaults(lora, False, 8, 8, GRPO_LR)["learning_rate"] == pytest.approx(1e-5)
    assert trainer_defaults(lora, False, 1, 16, SFT_LR)["learning_rate"] == pytest.approx(1e-4)


def test_train_cli_and_configs(tiny_model, samples, tmp_path):
    from pathlib import Path

    from videoseg_r1.cli import main

    _, root = samples
    repo = Path(__file__).resolve().parents[1]
    for path in sorted([*(repo / "configs").glob("grpo_*.yaml"), *(repo / "configs").glob("sft_*.yaml")]):
        import dataclasses

        from trl import GRPOConfig, SFTConfig

        cfg = load_job_config(path)
        assert cfg.mode in ("grpo", "sft")
        fields = {f.name for f in dataclasses.fields(GRPOConfig if cfg.mode == "grpo" else SFTConfig)}
        assert set(cfg.trainer) <= fields, path.name
        if cfg.mode == "grpo" and not any(w in path.name for w in ("tiny", "small")):  # the paper configs
            assert (cfg.prompts_per_step, cfg.num_generations) == (16, 8)
            lr = 1e-6 * (LORA_LR_FACTOR if cfg.lora.enabled else 1.0)  # LoRA: 10x the paper's 1e-6
            assert cfg.trainer["learning_rate"] == pytest.approx(lr) and cfg.trainer["beta"] == 0.01
    job = tmp_path / "job.yaml"
    job.write_text(
        "mode: grpo\nprompts_per_step: 1\nnum_generations: 4\n"
        "data:\n  samples: {model_input_size: 56, context_frame_size: 56, num_key_frames: 1, num_reference_frames: 1}\n"
        "trainer: {max_completion_length: 6, gradient_checkpointing: false, per_device_train_batch_size: 4}\n")
    code = main(["train", "grpo", "--config", str(job), "--model", tiny_model, "--benchmark", "synthetic",
                 "--data-root", str(root), "--output-dir", str(tmp_path / "run"), "--max-steps", "1",
                 "--max-samples", "2"])
    assert code == 0 and (tmp_path / "run" / "final" / "config.json").is_file()
    assert main(["train", "grpo", "--config", str(tmp_path / "missing.yaml"), "--output-dir", str(tmp_path)]) == 2
    from videoseg_r1.training.cli import build_samples

    two = load_job_config(job, benchmark="synthetic,synthetic", data_root=f"{root},{root}")
    two.data.samples.max_samples = 2
    assert len(build_samples(two)) == 4  # several benchmarks train together
    two.data.data_root = str(root)
    with pytest.raises(ValueError, match="data root"):
        build_samples(two)
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {no_such_option: 1}\n")
    assert main(["train", "grpo", "--config", str(bad), "--model", tiny_model, "--benchmark", "synthetic",
                 "--data-root", str(root), "--output-dir", str(tmp_path / "bad")]) == 2


def test_time_limit_callback_stops_and_saves():
    import time

    from transformers import TrainerControl, TrainerState

    from videoseg_r1.training.grpo import time_limit_callbacks

    assert time_limit_callbacks(0) == []
    (cb,) = time_limit_callbacks(0.5 / 60)  # half a second
    control, state = TrainerControl(), TrainerState()
    cb.on_step_begin(None, state, control)
    cb.on_step_end(None, state, control)
    assert not control.should_training_stop
    time.sleep(0.6)
    cb.on_step_end(None, state, control)
    assert control.should_training_stop and control.should_save


def test_fit_minutes_cuts_steps_and_remakes_the_schedule(monkeypatch):
    """A fake clock: 1 s per step, 2 minutes to fit -> 0.95 * 120 s = 114 steps; the cosine of the
    re-made schedule reaches 0 at step 114 exactly as a 114-step run's does."""
    import time

    import torch
    from transformers import TrainerControl, TrainerState, get_scheduler

    from videoseg_r1.training.grpo import FIT_MARGIN, time_limit_callbacks

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_scheduler("cosine", opt, num_warmup_steps=30, num_training_steps=1000)
    (cb,) = time_limit_callbacks(0, fit_minutes=2)
    control, state = TrainerControl(), TrainerState(max_steps=1000)
    for _ in range(1000):
        cb.on_step_begin(None, state, control)
        clock[0] += 1.0
        state.global_step += 1
        opt.step()
        sched.step()
        cb.on_step_end(None, state, control, lr_scheduler=sched)
        if control.should_training_stop:
            break
    expected = int(2 * 60 * FIT_MARGIN)
    assert state.global_step == state.max_steps == expected and control.should_save
    ref = get_scheduler("cosine", torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                        num_warmup_steps=30, num_training_steps=expected)
    for step in (0, 10, 29, 60, 100, expected - 1, expected):
        assert sched.lr_lambdas[0](step) == pytest.approx(ref.lr_lambdas[0](step))
    assert sched.lr_lambdas[0](expected) == pytest.approx(0.0, abs=1e-12)
