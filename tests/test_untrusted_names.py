"""Names read from annotation files are data, not paths (issue 22): each kind of bad video id,
expression id and frame name is refused by ``predict`` and ``evaluate`` with one line naming the file
and the entry, nothing is written outside the output folder, and the path builders refuse such names
even when a caller bypasses the readers."""

import json
from pathlib import Path

import numpy as np
import pytest

from videoseg_r1.cli import main
from videoseg_r1.data.base import DatasetError, Expression
from videoseg_r1.data.registry import get_reader
from videoseg_r1.eval.protocols import PredictionError, PredictionStore
from videoseg_r1.masks import rle_encode
from videoseg_r1.names import UnsafePathError, name_problem, safe_join, safe_member
from videoseg_r1.results import MaskTracks

from test_benchmark_layouts import jpegs, square  # noqa: E402  (tests/ is on sys.path under pytest)

FRAMES = ["00000", "00001", "00002"]
BAD = {
    "dotdot": "../evil_v",
    "absolute": "/tmp/evil_abs",
    "backslash": "..\\evil_bs",
    "empty": "",
    "control": "evil\x07bell",
    "empty_part": "a//evil",
}


@pytest.fixture(scope="module")
def models(tiny_model_args):
    return [*tiny_model_args, "--max-new-tokens", "8", "--target-frame", "middle"]


def mevis_root(root: Path, video="m1", exp_id="0", frames=FRAMES, split="valid_u") -> Path:
    d = root / split
    d.mkdir(parents=True)
    exps = {exp_id: {"exp": "the square", "obj_id": [0], "anno_id": [3]}}
    (d / "meta_expressions.json").write_text(json.dumps({"videos": {video: {"frames": frames, "expressions": exps}}}))
    (d / "mask_dict.json").write_text(json.dumps({"3": [rle_encode(square(t)) for t in range(3)]}))
    try:  # frames where the bad name points, so the old code found them and went on to write
        safe = [f for f in frames if "/" not in f and "\\" not in f and f and f.isprintable()]
        jpegs(Path(str(d / "JPEGImages") + "/" + video) if video else d / "JPEGImages" / "x", safe or FRAMES)
    except (OSError, ValueError):
        pass
    return root


def files_outside(tmp_path: Path, allowed: list[Path]) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and not any(a in p.parents for a in allowed)]


@pytest.mark.parametrize("where", ["video", "exp_id", "frame"])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_predict_and_evaluate_refuse_bad_names(models, tmp_path, capsys, where, kind):
    bad = BAD[kind]
    if where == "video":
        root = mevis_root(tmp_path / "data" / "mevis", video=bad)
    elif where == "exp_id":
        root = mevis_root(tmp_path / "data" / "mevis", exp_id=bad)
    else:
        root = mevis_root(tmp_path / "data" / "mevis", frames=["00000", bad, "00002"])
    out = tmp_path / "run" / "pred"
    before = set(files_outside(tmp_path, [tmp_path / "data"]))
    capsys.readouterr()
    rc = main(["predict", "--benchmark", "mevis", "--data-root", str(root), "--split", "valid_u",
               "--out", str(out), *models])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "meta_expressions.json" in err and "names from annotation files" in err
    assert repr(bad) in err
    written = set(files_outside(tmp_path, [tmp_path / "data"])) - before
    assert all(out in p.parents for p in written), written  # nothing outside --out
    assert not [p for p in out.rglob("*.png")]  # and no masks at all: refused before any work
    assert not Path("/tmp/evil_abs").exists()
    pred = tmp_path / "empty_pred"
    pred.mkdir()
    assert main(["evaluate", "--benchmark", "mevis", "--data-root", str(root), "--split", "valid_u",
                 "--predictions", str(pred), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(bad) in err


def test_revos_nested_ids_allowed_but_not_dotdot(tmp_path):
    from test_benchmark_layouts import make_revos

    ok = get_reader("revos", make_revos(tmp_path / "ok", video="UVO/all/-fbscFfkh4M"), "valid")
    assert ok.videos() == ["UVO/all/-fbscFfkh4M"] and len(ok.open_video("UVO/all/-fbscFfkh4M")) == 3
    for bad in ("UVO/../../evil", "UVO//x", "/UVO/x", "UVO/x/"):
        r = get_reader("revos", make_revos(tmp_path / f"bad{len(list(tmp_path.iterdir()))}", video=bad), "valid")
        with pytest.raises(DatasetError, match="meta_expressions_valid_.json.*video id"):
            r.videos()
    # MeViS ids are single components: '/' is refused there
    r = get_reader("mevis", mevis_root(tmp_path / "mevis", video="a/b"), "valid_u")
    with pytest.raises(DatasetError, match="'/'"):
        list(r.expressions())


def test_path_builders_refuse_names_that_bypass_the_readers(tmp_path):
    assert name_problem("UVO/all/x", nested=True) is None and name_problem("00005") is None
    assert name_problem(3) is None and name_problem(None) and name_problem(True)
    for bad in ("..", "../x", "a/../../x", "/etc", "C:evil", "a\\b", "a\nb", ""):
        with pytest.raises(UnsafePathError):
            safe_join(tmp_path, "v", bad)
        with pytest.raises(UnsafePathError):
            safe_member("Annotations", bad, "0.png")
    store = PredictionStore(tmp_path)
    with pytest.raises(PredictionError, match="refusing"):
        store.folder(Expression(video="../outside", exp_id="0", text="q"))
    (tmp_path / "v" / "0").mkdir(parents=True)
    with pytest.raises(PredictionError, match="refusing"):
        store.load(Expression(video="v", exp_id="0", text="q"), ["../../x"], (4, 4))
    tracks = MaskTracks(1, 4, 4, [1])
    tracks.set(0, {1: np.ones((4, 4), bool)})
    with pytest.raises(UnsafePathError):
        tracks.write_binary_pngs(tmp_path / "out" / "v" / "0", ["../../../escaped"])
    assert not list(tmp_path.rglob("escaped*")) and not (tmp_path / "out" / "v" / "0").exists()
