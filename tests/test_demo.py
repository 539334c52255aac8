"""`videoseg-r1 demo` and `--preset` end to end with tiny random models saved as a preset folder
(found through $VIDEOSEG_R1_MODELS): files written, scores printed, the missing-preset error,
`--preset` in `segment`, explicit flags overriding the preset."""

import json
import re

import pytest

from videoseg_r1.cli import build_parser, main
from videoseg_r1.cli_common import config_from_args
from videoseg_r1.presets import MODELS_ENV, PresetError, SMALL_SHORT_SIDE, resolve_models
from videoseg_r1.reasoning.tiny import save_tiny_reasoner
from videoseg_r1.segmentation.tiny import build_tiny_sam2, build_tiny_xmem, save_sam2


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("models")
    d = root / "synthetic-small"
    save_tiny_reasoner(d / "reasoner")
    save_sam2(*build_tiny_sam2(), d / "sam2")
    save_file({k: v.contiguous() for k, v in build_tiny_xmem().state_dict().items()}, str(d / "xmem.safetensors"))
    return root


@pytest.fixture
def preset_env(models_root, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(models_root))
    return models_root


FAST = ["--device", "cpu", "--max-new-tokens", "12", "--frames", "8"]


def test_demo_synthetic_end_to_end(preset_env, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "synthetic-small", "--seed", "1", "--out", str(out), *FAST]) == 0
    text = capsys.readouterr().out
    for name in ("trace.json", "overlay.mp4", "scores.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "masks").glob("*.png"))) == 8
    trace = json.loads((out / "trace.json").read_text())
    assert trace["num_frames"] == 8 and trace["query"] in text
    assert re.search(r"key frame: \d+", text) and "reasoning:" in text and "total wall time" in text
    m = re.search(r"J ([0-9.]+)\s+F ([0-9.]+)\s+J&F ([0-9.]+)", text)
    assert m, text
    assert all(0.0 <= float(v) <= 1.0 for v in m.groups())
    scores = json.loads((out / "scores.json").read_text())
    assert 0.0 <= scores["J&F"] <= 1.0 and scores["target_obj_ids"]
    # test_ood split, default preset (none named), same output folder replaced
    assert main(["demo", "--split", "test_ood", "--out", str(out), *FAST, "--target-frame", "middle"]) == 0
    assert "J&F" in capsys.readouterr().out


def test_demo_given_video_prints_no_scores(preset_env, tmp_path, capsys):
    from videoseg_r1.data.synthetic import generate_video
    from videoseg_r1.video import VideoWriter

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=10) as w:
        for f in generate_video(2, split="valid", frames=6, size=(64, 48)).frames:
            w.write(f)
    out = tmp_path / "mine"
    assert main(["demo", "--video", str(clip), "--query", "the red circle", "--out", str(out), "--device", "cpu",
                 "--max-new-tokens", "8", "--target-frame", "0"]) == 0
    text = capsys.readouterr().out
    assert "key frame: 0" in text and "J&F" not in text and (out / "overlay.mp4").is_file()
    assert not (out / "scores.json").exists()
    assert main(["demo", "--video", str(clip), "--out", str(tmp_path / "x")]) == 2  # no query
    assert "needs --query" in capsys.readouterr().err


def test_missing_preset_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr("videoseg_r1.presets.repo_models_dir", lambda: tmp_path / "repo_models")
    out = tmp_path / "o"
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty" / "synthetic-small" / "reasoner") in err
    assert str(tmp_path / "repo_models" / "synthetic-small" / "xmem.safetensors") in err
    assert "scripts/train_small_reasoner.py" in err and "Traceback" not in err
    assert not out.exists()
    args = build_parser().parse_args(["segment", "v.mp4", "-q", "x", "--out", "s", "--preset", "synthetic-small"])
    with pytest.raises(PresetError, match="model files not found"):
        config_from_args(args)
    with pytest.raises(SystemExit):  # unknown preset: argparse names the choices
        build_parser().parse_args(["segment", "v.mp4", "-q", "x", "-o", "o", "--preset", "nope"])


def test_preset_in_segment_and_flags_override(preset_env, tmp_path, capsys):
    parse = build_parser().parse_args
    base = ["segment", "v.mp4", "-q", "x", "-o", str(tmp_path / "o"), "--preset", "synthetic-small"]
    cfg = config_from_args(parse(base))
    paths = resolve_models("synthetic-small")
    assert cfg.reasoner.model == str(paths["reasoner"]) and cfg.segmenter.model == str(paths["sam2"])
    assert cfg.propagator.checkpoint.endswith("xmem.safetensors")
    assert cfg.propagator.short_side == SMALL_SHORT_SIDE and cfg.reasoner.model_input_size == 224
    cfg = config_from_args(parse(base + ["--short-side", "120", "--model-input-size", "112", "--max-new-tokens", "7",
                                         "--reasoner", str(tmp_path / "mine"), "--sam2", "facebook/sam2.1-hiera-tiny"]))
    assert (cfg.propagator.short_side, cfg.reasoner.model_input_size, cfg.reasoner.max_new_tokens) == (120, 112, 7)
    assert cfg.reasoner.model == str(tmp_path / "mine") and cfg.segmenter.model == "facebook/sam2.1-hiera-tiny"
    assert cfg.sampler.frame_size == 112  # preset settings the flags did not touch stay
    # an explicit model is not looked up in the preset folder
    (preset_env / "synthetic-small" / "xmem.safetensors").rename(preset_env / "xmem.bak")
    try:
        assert config_from_args(parse(base + ["--xmem", "my.pth"])).propagator.checkpoint == "my.pth"
    finally:
        (preset_env / "xmem.bak").rename(preset_env / "synthetic-small" / "xmem.safetensors")
    with pytest.raises(ValueError, match="not both"):
        config_from_args(parse(base + ["--config", "c.yaml"]))
    # segment runs end to end with the preset
    from videoseg_r1.data.synthetic import generate_video
    from videoseg_r1.video import VideoWriter

    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, fps=10) as w:
        for f in generate_video(3, split="valid", frames=6, size=(64, 48)).frames:
            w.write(f)
    out = tmp_path / "seg"
    rc = main(["segment", str(clip), "-q", "the blue square", "--out", str(out), "--preset", "synthetic-small",
               "--device", "cpu", "--max-new-tokens", "8", "--target-frame", "middle"])
    assert rc in (0, 1) and (out / "trace.json").is_file()


def test_shipped_models_fit_the_limits_and_run_the_demo(tmp_path, monkeypatch, capsys):
    """The trained models of models/synthetic-small/ (issue 8): each file under 16 MB, 40 MB in all, and
    the real default demo runs with them (HTFS and reasoning answers parse: no format fallbacks)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "models" / "synthetic-small"
    files = [f for f in root.rglob("*") if f.is_file()]
    assert files and all(f.stat().st_size < 16 * 2**20 for f in files)
    assert sum(f.stat().st_size for f in files) < 40 * 2**20
    monkeypatch.delenv(MODELS_ENV, raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) in (0, 1)  # 1: no target found
    trace = json.loads((out / "trace.json").read_text())
    assert trace["reasoning_text"] and trace["prompts"]
    assert not [f for f in trace["fallbacks"] if "no_valid" in f or "no JSON" in f], trace["fallbacks"]
    assert (out / "overlay.mp4").is_file() and len(list((out / "masks").glob("*.png"))) == trace["num_frames"]
