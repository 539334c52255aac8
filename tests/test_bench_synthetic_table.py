"""benchmarks/bench_synthetic_table.py --quick: tiny random models, tiny dataset, the whole table on the CPU."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_synthetic_table", ROOT / "benchmarks" / "bench_synthetic_table.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_quick_table_rows_json_and_resume(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "table.json"
    # a share of the work first: only the second GRPO seed's variants
    assert bench.main(["--quick", "--limit", "2", "--out", str(out), "--only", "grpo-seed1-*"]) == 0
    part = json.loads(out.read_text())
    assert {k.split("/")[0] for k in part["runs"]} == {"grpo-seed1-htfs-box+pos+neg", "grpo-seed1-first-box+pos+neg",
                                                      "grpo-seed1-middle-box+pos+neg", "grpo-seed1-htfs-box",
                                                      "grpo-seed1-htfs-box+pos"}
    assert part["rows"][0]["status"] == "not run" and part["rows"][1]["seeds"] == 1
    capsys.readouterr()
    assert bench.main(["--quick", "--limit", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert set(res) >= {"data_root", "limit", "num_expressions", "models", "config", "rows", "runs", "pred_dir"}
    assert res["limit"] == 2 and res["num_expressions"] == {"valid": 2, "test_ood": 2}
    names = [r["name"] for r in res["rows"]]
    assert names == ["SFT only", "SFT + GRPO", "SFT + GRPO, no length penalty",
                     "key frame: first (GRPO)", "key frame: middle (GRPO)", "key frame: HTFS (GRPO)",
                     "prompts: box (GRPO)", "prompts: box + pos. point (GRPO)", "prompts: box + both points (GRPO)"]
    assert [r["group"] for r in res["rows"]] == [1, 2, 3, 4, 4, 4, 5, 5, 5]
    for row in res["rows"]:
        assert row["status"] == "ok" and row["name"] in text
        for split in ("valid", "test_ood"):
            s = row["splits"][split]
            assert set(s) >= {"J", "F", "J&F", "n", "tiers"} and s["n"] == 2
            assert set(s["tiers"]) == {"1", "2", "3", "4"}
            assert 0.0 <= s["J&F"]["mean"] <= 100.0
        assert ("reasoning_tokens" in row) == (row["group"] <= 3)
    assert all((r["predicted"] == 0) == k.startswith("grpo-seed1-") for k, r in res["runs"].items())  # done before
    grpo = res["rows"][1]
    assert grpo["seeds"] == 2 and grpo["splits"]["valid"]["J&F"]["std"] is not None  # two quick GRPO seeds
    # HTFS (row 4) and box + both points (row 5) are the runs of row 2
    assert res["rows"][5]["variants"] == res["rows"][8]["variants"] == grpo["variants"]
    md = out.with_suffix(".md").read_text()
    assert md.count("\n| ") >= 10 and "SFT + GRPO" in md
    # resumable: a second run predicts nothing new
    assert bench.main(["--quick", "--limit", "2", "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert all(r["predicted"] == 0 and r["skipped"] == 2 for r in again["runs"].values())
    assert [r["splits"] for r in again["rows"]] == [r["splits"] for r in res["rows"]]


def test_pick_random_is_a_seeded_sample_in_benchmark_order():
    bench = _load()
    items = list(range(100))
    a = bench.pick(items, 10, "random")
    assert a == bench.pick(items, 10, "random") and a == sorted(set(a)) and len(a) == 10
    assert bench.pick(items, 10, "first") == list(range(10))
    assert bench.pick(items, 10, "spread") == list(range(0, 100, 10))
    assert bench.pick(items, None, "random") == items and bench.pick(items, 200, "random") == items
