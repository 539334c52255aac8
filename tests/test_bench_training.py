"""benchmarks/bench_training.py --quick: the training-throughput table runs end to end on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_table(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_training.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| pretrain | cpu |" in proc.stdout and "| grpo | cpu |" in proc.stdout
    rows = {r["stage"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"pretrain", "sft", "grpo"}
    assert rows["pretrain"]["samples_per_s"] > 0 and rows["pretrain"]["gflops_per_sample"] > 0
    assert rows["grpo"]["samples_per_step"] == 4  # 1 prompt x 4 generations
