"""The Python API as the README shows it (run from the README's own code block), and its inputs."""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def pipe():
    from videoseg_r1 import load_pipeline

    return load_pipeline(preset="synthetic-small", device="cpu")


def test_readme_example_runs(tmp_path, monkeypatch):
    import videoseg_r1

    assert set(videoseg_r1.__all__) >= {"load_pipeline", "VideoSegR1Pipeline", "Result", "PipelineConfig"}
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), scope)
    out = tmp_path / "out" / "red_square"
    assert (out / "trace.json").is_file() and (out / "overlay.mp4").stat().st_size > 0
    assert len(list((out / "masks").glob("*.png"))) == 16
    assert scope["masks"].shape == (16, 120, 160) and scope["masks"].dtype == bool


def test_inputs_and_repeat(pipe, tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    from_list = pipe(frames, "the blue circle", fps=6)
    from_array = pipe(np.stack(frames), "the blue circle", fps=6)
    assert from_list.trace.fps == 6.0 and from_list.tracks.shape == (6, 48, 64) and from_list.trace.seed == 0
    # the same call repeats: HTFS's sampled answers are seeded (config seed 0, or the call's)
    answers = lambda r: [a["text"] for rnd in r.trace.sampler["rounds"] for a in rnd["answers"]]
    assert answers(from_list) == answers(from_array) and from_list.sampled.key_segment == from_array.sampled.key_segment
    assert from_list.reasoning.text == from_array.reasoning.text
    assert np.array_equal(from_list.tracks.union(), from_array.tracks.union())
    other = [answers(pipe(frames, "the blue circle", fps=6, seed=s)) for s in (1, 2, 3)]
    assert any(a != answers(from_list) for a in other)  # other seeds, other samples
    assert answers(pipe(frames, "the blue circle", fps=6, seed=2)) == other[1]
    with pytest.raises(ValueError, match="uint8"):
        pipe([f.astype(np.float32) for f in frames], "x")
    with pytest.raises(ValueError, match="cannot read a video"):
        pipe(42, "x")
    with pytest.raises(ValueError, match="not both"):
        from videoseg_r1 import PipelineConfig, load_pipeline

        load_pipeline(PipelineConfig(), preset="synthetic-small")
