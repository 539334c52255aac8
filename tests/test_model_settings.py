"""Settings saved in a model folder (videoseg_r1.json) and the frozen stage-1 (HTFS) model (issue 15
items 2 and 11): what training records, how the CLI layers them, which model answers HTFS."""

import argparse
import json

import numpy as np
import pytest

from videoseg_r1.cli_common import add_model_arguments, config_from_args
from videoseg_r1.config import PipelineConfig, ReasonerConfig, SamplerConfig
from videoseg_r1.model_settings import (
    SETTINGS_FILE,
    ModelSettingsError,
    apply_model_settings,
    read_model_settings,
    root_base_model,
    stage_one_model,
    training_settings,
    write_model_settings,
)
from videoseg_r1.training.samples import SampleConfig

SMALL = dict(model_input_size=224, context_frame_size=112, num_key_frames=2, num_reference_frames=3,
             htfs_frame_size=56, htfs_max_frames_shown=12)


def _args(*argv):
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    return p.parse_args(list(argv))


def _folder(path, base=None, htfs=True):
    path.mkdir(parents=True, exist_ok=True)
    write_model_settings(path, training_settings(SampleConfig(**SMALL), base, htfs_tasks=htfs))
    return path


def test_settings_round_trip_and_relative_base(tmp_path):
    base = tmp_path / "runs" / "pretrain" / "final"
    base.mkdir(parents=True)
    model = _folder(tmp_path / "runs" / "sft" / "final", base=str(base))
    data = json.loads((model / SETTINGS_FILE).read_text())
    assert data["base_model"] == "../../pretrain/final"  # moves with the pair
    assert data["reasoner"] == {"model_input_size": 224, "context_frame_size": 112}
    assert data["sampler"] == {"num_key_frames": 2, "num_reference_frames": 3, "frame_size": 56,
                               "max_frames_shown": 12, "as_video": False}
    assert stage_one_model(str(model), "") == str(base.resolve())
    # a later stage started from `model` records the same frozen base (the first of the chain)
    assert root_base_model(str(model)) == str(base.resolve())
    assert root_base_model("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    # no HTFS tasks: nothing said about the HTFS layout
    plain = _folder(tmp_path / "plain", htfs=False)
    assert set(read_model_settings(plain)["sampler"]) == {"num_key_frames", "num_reference_frames"}


def test_stage_one_choice_and_errors(tmp_path):
    (tmp_path / "gone").mkdir()
    lonely = _folder(tmp_path / "r", base=str(tmp_path / "gone"))
    (tmp_path / "gone").rmdir()  # recorded, then moved away
    with pytest.raises(ModelSettingsError, match="--sampler-model"):
        stage_one_model(str(lonely), "")
    assert stage_one_model(str(lonely), "reasoner") == str(lonely)
    assert stage_one_model(str(lonely), "Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert stage_one_model("Qwen/Qwen2.5-VL-7B-Instruct", "") == "Qwen/Qwen2.5-VL-7B-Instruct"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / SETTINGS_FILE).write_text("{not json")
    with pytest.raises(ModelSettingsError, match="bad"):
        read_model_settings(tmp_path / "bad")


def test_cli_layers_defaults_model_folder_config_flags(tmp_path):
    base = _folder(tmp_path / "base")
    model = _folder(tmp_path / "model", base=str(base))
    cfg = config_from_args(_args("--reasoner", str(model)))
    assert (cfg.reasoner.model_input_size, cfg.reasoner.context_frame_size) == (224, 112)
    assert (cfg.sampler.num_key_frames, cfg.sampler.num_reference_frames) == (2, 3)
    assert (cfg.sampler.frame_size, cfg.sampler.max_frames_shown, cfg.sampler.as_video) == (56, 12, False)
    assert cfg.sampler.model == str(base.resolve())
    # a config file's keys and the flags win over the folder
    yaml = tmp_path / "c.yaml"
    yaml.write_text("reasoner:\n  context_frame_size: 168\nsampler:\n  as_video: true\n")
    cfg = config_from_args(_args("--config", str(yaml), "--reasoner", str(model), "--model-input-size", "336",
                                 "--sampler-model", "reasoner"))
    assert (cfg.reasoner.model_input_size, cfg.reasoner.context_frame_size) == (336, 168)
    assert cfg.sampler.as_video is True and cfg.sampler.num_key_frames == 2
    assert cfg.sampler.model == str(model)
    # a hub id has no folder: defaults stay
    hub = apply_model_settings(PipelineConfig())
    assert hub.reasoner.model_input_size == ReasonerConfig().model_input_size
    assert hub.sampler.model == hub.reasoner.model


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    from videoseg_r1.reasoning.tiny import save_tiny_reasoner

    root = tmp_path_factory.mktemp("pair")
    base = save_tiny_reasoner(root / "base", seed=0)
    trained = save_tiny_reasoner(root / "trained", seed=1)
    write_model_settings(trained, {"format": 1, "base_model": str(base), "reasoner": {}, "sampler": {}})
    return base, trained


def _answers(reasoner, frames):
    out = reasoner.generate("which frames?", frames, as_video=False, timestamps_s=[0.0, 0.5],
                            frame_size_hw=(56, 56), max_new_tokens=6)
    return out.samples[0].text


def test_htfs_runs_on_the_recorded_base_model(tiny_pair):
    from videoseg_r1.pipeline import stage_one_reasoner
    from videoseg_r1.reasoning.reasoner import Reasoner

    base, trained = tiny_pair
    reasoner = Reasoner.from_pretrained(trained, ReasonerConfig(max_new_tokens=6))
    cfg = apply_model_settings(PipelineConfig(reasoner=ReasonerConfig(model=str(trained))))
    stage_one = stage_one_reasoner(reasoner, cfg)
    assert stage_one is not reasoner and stage_one.config.model == str(base.resolve())
    frames = [np.random.default_rng(i).integers(0, 255, (56, 56, 3), dtype=np.uint8) for i in range(2)]
    assert _answers(stage_one, frames) == _answers(Reasoner.from_pretrained(base), frames)
    # the reasoner itself, when asked: one copy, the same object
    same = apply_model_settings(PipelineConfig(reasoner=ReasonerConfig(model=str(trained)),
                                               sampler=SamplerConfig(model="reasoner")))
    assert stage_one_reasoner(reasoner, same) is reasoner


def test_htfs_under_a_lora_adapter_runs_the_base_with_one_copy(tiny_pair, tmp_path):
    from peft import LoraConfig, get_peft_model

    from videoseg_r1.pipeline import stage_one_reasoner
    from videoseg_r1.reasoning.reasoner import AdapterDisabledReasoner, Reasoner

    base, _ = tiny_pair
    plain = Reasoner.from_pretrained(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = tmp_path / "adapter"
    get_peft_model(Reasoner.from_pretrained(base).model, lora).save_pretrained(adapter)
    plain.processor.save_pretrained(adapter)
    tuned = Reasoner.from_pretrained(adapter)
    assert tuned.adapter_base() is not None
    cfg = PipelineConfig(reasoner=ReasonerConfig(model=str(adapter)), sampler=SamplerConfig(model=str(base)))
    stage_one = stage_one_reasoner(tuned, cfg)
    assert isinstance(stage_one, AdapterDisabledReasoner) and stage_one.reasoner is tuned
    frames = [np.random.default_rng(7 + i).integers(0, 255, (56, 56, 3), dtype=np.uint8) for i in range(2)]
    assert _answers(stage_one, frames) == _answers(plain, frames)  # adapter off: the base model
    import torch

    logits = {}
    for name, r in (("tuned", tuned), ("base", plain)):
        inputs, _, _ = r.prepare("q", frames, as_video=False, timestamps_s=[0.0, 0.5], frame_size_hw=(56, 56))
        with torch.inference_mode():
            logits[name] = r.model(**inputs).logits[0, -1]
    assert not torch.allclose(logits["tuned"], logits["base"])  # the adapter is on again after HTFS
