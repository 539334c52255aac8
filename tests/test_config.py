"""Config files: strict YAML -> dataclasses, numbers as a user writes them."""

import pytest

from videoseg_r1.config import PipelineConfig, load_config, yaml_load


def test_yaml_exponent_floats():
    data = yaml_load("a: 1e-5\nb: 2.5E+3\nc: 1.0e-6\nd: text\ne: 7\nf: .5\n")
    assert data == {"a": 1e-5, "b": 2500.0, "c": 1e-6, "d": "text", "e": 7, "f": 0.5}
    assert isinstance(data["e"], int)


def test_load_config_strict(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sampler:\n  delta: 5e-1\n  num_interval_samples: 7\nreasoner:\n  model: /models/r\n")
    cfg = load_config(p)
    assert isinstance(cfg, PipelineConfig) and cfg.sampler.delta == 0.5 and cfg.sampler.num_interval_samples == 7
    assert cfg.reasoner.model == "/models/r"
    p.write_text("sampler:\n  deltaa: 1\n")
    with pytest.raises(ValueError, match="deltaa"):
        load_config(p)
    p.write_text("sampler: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- model_input_size on the vision grid (issue 15 item 9)


def test_model_input_size_off_the_vision_grid_is_an_error_naming_the_fix(tmp_path):
    import dataclasses

    from videoseg_r1.config import ReasonerConfig
    from videoseg_r1.training.samples import SampleConfig
    from videoseg_r1.training.stream import StreamConfig

    fix = r"model_input_size 800 is not a multiple of 28 px .*812 px .*1\.5 % off\. Use 784 or 812\."
    with pytest.raises(ValueError, match=fix):
        ReasonerConfig(model_input_size=800)
    with pytest.raises(ValueError, match=fix):  # --model-input-size goes through dataclasses.replace
        dataclasses.replace(ReasonerConfig(), model_input_size=800)
    with pytest.raises(ValueError, match=fix):  # training samples: the solution is in these pixels
        SampleConfig(model_input_size=800)
    with pytest.raises(ValueError, match=fix):
        StreamConfig(samples=SampleConfig(model_input_size=800))
    p = tmp_path / "c.yaml"
    p.write_text("reasoner:\n  model_input_size: 800\n")
    with pytest.raises(ValueError, match=fix):
        load_config(p)
    with pytest.raises(ValueError, match="smaller than the vision grid"):
        ReasonerConfig(model_input_size=14)
    with pytest.raises(ValueError, match="whole number"):
        ReasonerConfig(model_input_size=840.5)
    for size in (28, 224, 812, 840, 1008):
        assert ReasonerConfig(model_input_size=size).model_input_size == size
        assert SampleConfig(model_input_size=size).model_input_size == size
    p.write_text("reasoner:\n  model_input_size: 812\n")
    assert load_config(p).reasoner.model_input_size == 812


@pytest.mark.parametrize("size", [224, 800, 812, 830, 840, 857])
def test_accepted_sizes_are_exactly_the_sizes_the_processor_keeps(size):
    """The Qwen2.5-VL image processor (patch 14, merge 2), given the frame's own area as the
    Reasoner gives it, keeps an accepted size and changes a rejected one."""
    import numpy as np
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor

    from videoseg_r1.config import ReasonerConfig

    processor = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    out = processor(images=[np.zeros((size, size, 3), np.uint8)], return_tensors="pt",
                    size={"shortest_edge": size * size, "longest_edge": size * size})
    _, grid_h, grid_w = out["image_grid_thw"][0].tolist()
    kept = (grid_h * 14, grid_w * 14) == (size, size)
    try:
        accepted = ReasonerConfig(model_input_size=size).model_input_size == size
    except ValueError:
        accepted = False
    assert accepted == kept
    assert kept == (size % 28 == 0)
