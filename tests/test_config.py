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
