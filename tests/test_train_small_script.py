"""scripts/train_small_reasoner.py end to end on the CPU with a minuscule model (offline, ~30 s).

One call builds the data, the random small model, runs 1 SFT step and 1 GRPO step (each stage in
its own ``videoseg-r1 train`` process, with ``--resume auto``) and writes the summary; a second call
finds every stage done and only rewrites the summary. (Resuming a stage from its checkpoint is the
trainers' own ``--resume auto``, tested in tests/test_training.py.)
"""

import importlib.util
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train_small_reasoner.py"
MINUSCULE = [
    "--init", "--synth-videos", "1", "--synth-frames", "6", "--synth-size", "64x48",
    "--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--intermediate", "64",
    "--vision-depth", "1", "--vision-hidden", "16", "--vision-heads", "1", "--vision-intermediate", "32",
    "--max-samples", "2", "--sft-steps", "1",
    "--set", "data.samples.model_input_size=56", "--set", "data.samples.context_frame_size=56",
    "--set", "data.samples.num_key_frames=1", "--set", "data.samples.num_reference_frames=1",
    "--set", "prompts_per_step=2", "--set-sft", "trainer.per_device_train_batch_size=2",
    "--set-sft", "trainer.dataloader_num_workers=0", "--set-sft", "trainer.dataloader_persistent_workers=false",
    "--set-sft", "trainer.learning_rate=2e-3",
    "--set-grpo", "num_generations=2", "--set-grpo", "trainer.per_device_train_batch_size=4",
    "--set-grpo", "trainer.max_completion_length=4", "--set-grpo", "trainer.save_steps=1",
]
COMPONENTS = ["think_format", "answer_format", "accuracy", "non_repeat", "negative_point"]


def _module():
    spec = importlib.util.spec_from_file_location("train_small_reasoner", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(out, capsys, *extra):
    """The script's main() in this process (the stages still run as subprocesses)."""
    mod = _module()
    assert mod.main(["--out", str(out), *MINUSCULE, *extra]) == 0
    return capsys.readouterr().out


def _steps(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r and "train_runtime" not in r]


def test_script_sft_then_grpo_summary_and_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    stdout = _run(out, capsys, "--grpo-steps", "1")
    for rel in ["data/meta_expressions_train_.json", "init/config.json", "init/small_model.json",
                "init/tokenizer.json", "configs/sft.yaml", "configs/grpo.yaml", "sft/final/config.json",
                "sft/stage.json", "grpo/final/model.safetensors", "grpo/checkpoint-1", "logs/sft.log",
                "logs/grpo.log", "summary.json", "summary.md"]:
        assert (out / rel).exists(), rel
    small = json.loads((out / "init" / "small_model.json").read_text())
    assert small["text_config"]["hidden_size"] == 32 and small["parameters"] > 0
    # the GRPO stage starts from the SFT model, with the overrides applied
    grpo_job = yaml.safe_load((out / "configs" / "grpo.yaml").read_text())
    assert grpo_job["model"] == str(out / "sft" / "final") and grpo_job["num_generations"] == 2
    assert yaml.safe_load((out / "configs" / "sft.yaml").read_text())["trainer"]["learning_rate"] == 0.002
    # samples built once per distinct sample config: SFT also teaches the HTFS prompts, GRPO does not
    assert len(list((out / "samples").iterdir())) == 2
    grpo_rows = [json.loads(line) for line in (out / "grpo" / "train_log.jsonl").read_text().splitlines()]
    assert all(f"rewards/{c}/mean" in grpo_rows[0] for c in COMPONENTS + ["videoseg_total"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["sft"]["steps"] == 1 and summary["stages"]["grpo"]["steps"] == 1
    grpo = summary["stages"]["grpo"]
    assert set(COMPONENTS + ["videoseg_total"]) <= set(grpo["rewards"])
    assert grpo["steps_per_s"] > 0 and grpo["generated_tokens_per_s"] > 0 and grpo["completions_per_step"] == 4
    md = (out / "summary.md").read_text()
    assert "| GRPO | 1 |" in md and "| accuracy |" in md and "GRPO reward" in stdout
    assert "[grpo] rollouts: transformers generate (policy on cpu)" in stdout

    assert "--resume auto" in stdout  # each stage continues from its latest checkpoint when re-run

    # a second call: data, model and both stages are found done; only the summary is rewritten
    stdout = _run(out, capsys, "--grpo-steps", "1")
    assert "synthetic data found" in stdout and "initial model found" in stdout
    assert "sft: already done" in stdout and "grpo: already done" in stdout and "train grpo" not in stdout
    assert _steps(out / "grpo" / "train_log.jsonl") == [1]
    assert _steps(out / "sft" / "train_log.jsonl") == []  # one step < logging_steps: only the run-end row

    # a GRPO variant from the same SFT model, in its own folder, then shipped in bf16
    ship = tmp_path / "shipped"
    stdout = _run(out, capsys, "--grpo-steps", "1", "--grpo-name", "grpo_nolen",
                  "--set-grpo", "rewards.use_length_penalty=false", "--ship", str(ship))
    assert "sft: already done" in stdout and "train grpo" in stdout
    job = yaml.safe_load((out / "configs" / "grpo_nolen.yaml").read_text())
    assert job["rewards"]["use_length_penalty"] is False and job["model"] == str(out / "sft" / "final")
    assert (out / "grpo_nolen" / "final" / "config.json").is_file() and (out / "summary_grpo_nolen.json").is_file()
    assert json.loads((out / "summary.json").read_text())["stages"]["grpo"]["steps"] == 1  # untouched
    import torch
    from safetensors import safe_open

    from videoseg_r1.config import ReasonerConfig
    from videoseg_r1.reasoning.reasoner import Reasoner

    files = list(ship.glob("*.safetensors"))
    assert files and not (tmp_path / "shipped.partial").exists()
    with safe_open(str(files[0]), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"BF16"}
    r = Reasoner.from_pretrained(ship, ReasonerConfig(device="cpu", dtype="float32"))
    assert r.model.dtype == torch.float32
    # an interrupted run (no run-end row) still gets steps/s from the per-step times
    log = out / "grpo" / "train_log.jsonl"
    log.write_text("\n".join(l for l in log.read_text().splitlines() if "train_runtime" not in l) + "\n")
    _run(out, capsys, "--summary-only")
    grpo = json.loads((out / "summary.json").read_text())["stages"]["grpo"]
    assert "steps_per_s" not in grpo and grpo["steps_per_s_from_step_time"] > 0
    assert "| GRPO | 1 | –" not in (out / "summary.md").read_text()


def test_console_keeps_messages_printed_mid_progress_bar():
    parts = _module().console_parts
    bar = "  0%|          | 0/6 [00:00<?, ?it/s]"
    assert parts(f"\r{bar}rollouts: decode engine\n") == ["rollouts: decode engine"]
    assert parts(f"\r{bar}\r 17%|#6        | 1/6 [00:03<00:15,  3.1s/it]\n") == []
    assert parts("  {'loss': '0.5'}\n") == ["  {'loss': '0.5'}"]
