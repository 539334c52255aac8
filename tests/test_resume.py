"""Training that survives a kill (SFT and GRPO, tiny Qwen2.5-VL on the CPU, real SIGKILLs).

For each trainer: an uninterrupted 4-step run (checkpoints at 2 and 4) is the reference. A child
process is SIGKILLed right after checkpoint-2 is complete; a second child resumes and is SIGKILLed
while checkpoint-4 is being written; a last ``--resume auto`` must skip the torn checkpoint-4, take
checkpoint-2 with its weights, and end with the reference's weights and losses.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resume_child

CHILD = Path(resume_child.__file__)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from videoseg_r1.data.synthetic import generate
    from videoseg_r1.reasoning.tiny import save_tiny_reasoner

    model = str(save_tiny_reasoner(tmp_path_factory.mktemp("tiny") / "model"))
    root = generate(tmp_path_factory.mktemp("syn") / "data", num_videos=1, frames=6, size=(64, 48), seed=3,
                    splits=["train"], workers=1)
    return model, str(root)


def _child(mode, model, root, out, kill):
    spec = json.dumps(dict(mode=mode, model=model, root=root, out=str(out), kill=kill))
    proc = subprocess.run([sys.executable, str(CHILD), spec], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, f"child was not killed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stderr


def _losses(out):
    rows = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows if "loss" in row]


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


@pytest.mark.parametrize("mode", ["sft", "grpo"])
def test_kill_resume_equals_uninterrupted(setup, mode, tmp_path, capfd):
    from videoseg_r1.training.checkpoints import MARKER

    model, root = setup
    ref = resume_child.run(mode, model, root, tmp_path / "ref", resume=None)
    assert ref.state.global_step == resume_child.MAX_STEPS
    assert (tmp_path / "ref" / "checkpoint-2" / MARKER).is_file()

    out = tmp_path / "killed"
    _child(mode, model, root, out, "after:2")
    assert (out / "checkpoint-2" / MARKER).is_file() and not (out / "final").exists()
    log = _child(mode, model, root, out, "during:4")
    assert "resume: from" in log and "checkpoint-2" in log and "resume: loaded" in log
    torn = out / "checkpoint-4"
    assert torn.is_dir() and not (torn / MARKER).exists() and not (torn / "trainer_state.json").exists()

    capfd.readouterr()
    resumed = resume_child.run(mode, model, root, out)
    err = capfd.readouterr().err
    assert "skipped incomplete checkpoint-4" in err and "resume: from" in err
    assert (out / "incomplete-checkpoint-4").is_dir() and (torn / MARKER).is_file()  # rewritten, complete
    assert resumed.state.global_step == resume_child.MAX_STEPS

    # the first resumed step's loss (both resumes) and every later one equal the uninterrupted run's
    ref_loss = dict(_losses(tmp_path / "ref"))
    got = _losses(out)
    assert [s for s, _ in got] == [1, 2, 3, 4, 3, 4]
    for step, loss in got:
        assert loss == pytest.approx(ref_loss[step], rel=1e-5, abs=1e-6), (step, loss, ref_loss[step])
    a, b = _weights(tmp_path / "ref" / "final"), _weights(out / "final")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
    start = _weights(model)
    assert any(not torch.equal(start[k], a[k]) for k in a if k in start)  # the run did train


def test_resume_refuses_a_checkpoint_that_does_not_fit(setup, tmp_path):
    from safetensors.torch import load_file, save_file

    from videoseg_r1.training.checkpoints import CheckpointError, load_full_weights, resolve_resume, write_marker
    from transformers import AutoModelForImageTextToText

    model_dir, _ = setup
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    ckpt = tmp_path / "checkpoint-1"
    model.save_pretrained(ckpt)  # saved under the checkpoint names transformers converts from
    state = load_file(str(ckpt / "model.safetensors"))
    assert any(k.startswith("model.layers.") for k in state)  # i.e. not the model's own names
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert load_full_weights(model, ckpt) == len(state)
    for name, tensor in AutoModelForImageTextToText.from_pretrained(model_dir).state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    dropped = dict(state)
    dropped.pop(next(k for k in dropped if "visual" in k))
    dropped["not.a.weight"] = torch.zeros(1)
    save_file(dropped, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match="1 missing.*1 unexpected"):
        load_full_weights(model, ckpt)

    write_marker(ckpt, 1)
    (ckpt / "model.safetensors").write_bytes(b"torn")
    with pytest.raises(CheckpointError, match="incomplete.*model.safetensors has 4 bytes"):
        resolve_resume(str(ckpt), tmp_path)
    assert resolve_resume("auto", tmp_path) is None  # torn: moved aside, start fresh
    assert (tmp_path / "incomplete-checkpoint-1").is_dir()


def test_lora_resume_restores_the_adapter(setup, tmp_path):
    """A LoRA SFT run resumed from its checkpoint ends with the uninterrupted run's adapter."""
    from safetensors.torch import load_file

    from videoseg_r1.training.job import LoraSettings
    from videoseg_r1.training.sft import run_sft

    model, root = setup
    ds = resume_child.make_samples(root)

    cfg = resume_child.make_job("sft", model)
    cfg.lora = LoraSettings(enabled=True, r=4, alpha=8)
    cfg.trainer.update(learning_rate=5e-2)
    run_sft(cfg, ds, tmp_path / "ref", save_final=False)
    saved = load_file(str(tmp_path / "ref" / "checkpoint-4" / "adapter_model.safetensors"))
    import shutil

    shutil.rmtree(tmp_path / "ref" / "checkpoint-4")
    run_sft(cfg, ds, tmp_path / "ref", resume="auto", save_final=False)  # steps 3-4 again, from checkpoint-2
    a = saved
    b = load_file(str(tmp_path / "ref" / "checkpoint-4" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
