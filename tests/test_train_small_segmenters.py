"""scripts/train_small_sam2.py and scripts/train_small_xmem.py on the CPU with minuscule models (a few s).

Each script runs 2 steps (checkpoint at step 2, final written), then again with ``--steps 3``: it must
resume from the step-2 checkpoint, run one step and rewrite the final model, which must load through the
inference code paths (``KeyFrameSegmenter`` from the folder, ``XMemPropagator`` from the safetensors
file) and run. Plus the prompt sampler and the dense training readout against the inference similarity.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _finite_log(out: Path, metric: str):
    log = json.loads((out / "train_log.json").read_text())
    assert log["train"] and all(math.isfinite(r["loss"]) for r in log["train"])
    assert log["valid"] and all(0.0 <= r[metric] <= 1.0 for r in log["valid"])
    return log


SAM2_ARGS = ["--batch-size", "2", "--data-size", "64x48", "--video-frames", "4", "--val-samples", "3",
             "--eval-every", "2", "--save-every", "2", "--log-every", "1", "--tiny"]
XMEM_ARGS = ["--batch-size", "2", "--data-size", "64x48", "--clip-frames", "4", "--video-frames", "6",
             "--val-videos", "2", "--val-frames", "4", "--eval-every", "2", "--save-every", "2", "--log-every", "1",
             "--tiny"]


def test_train_small_sam2_resumes_and_loads(tmp_path, capsys):
    from videoseg_r1.config import SegmenterConfig
    from videoseg_r1.data.synthetic import generate_video
    from videoseg_r1.segmentation.keyframe import KeyFrameSegmenter
    from videoseg_r1.training.segmenter_training import sample_prompt
    from videoseg_r1.types import ObjectPrompt

    mod, out = _script("train_small_sam2"), tmp_path / "sam2"
    assert mod.main(["--out", str(out), "--steps", "2", *SAM2_ARGS]) == 0
    assert (out / "checkpoints" / "step-0000002.pt").is_file() and (out / "final" / "model.safetensors").is_file()
    assert mod.main(["--out", str(out), "--steps", "3", *SAM2_ARGS]) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "step-0000002.pt at step 2" in text
    log = _finite_log(out, "miou")
    assert [r["step"] for r in log["train"]] == [1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 3 and summary["done"] and json.loads((out / "final" / "training.json").read_text())["step"] == 3

    video = generate_video(3, "valid", 0, frames=2, size=(64, 48))
    obj = int(np.unique(video.label_maps[0])[-1])
    p = sample_prompt(video.label_maps[0] == obj, None)
    prompt = ObjectPrompt(0, p["box"], [p["point"], p["neg_point"]], [1, 0])
    seg = KeyFrameSegmenter(SegmenterConfig(model=str(out / "final"), device="cpu", dtype="float32"))
    res = seg.segment(video.frames[0], [prompt])
    assert res.masks[0].shape == (48, 64) and res.masks[0].dtype == bool and math.isfinite(res.scores[0])
    sam = seg.model  # the prompt and image positional encodings stay one matrix through save / load
    torch.testing.assert_close(sam.prompt_encoder.shared_embedding.positional_embedding,
                               sam.shared_image_embedding.positional_embedding, rtol=0, atol=0)


def test_small_sam2_starts_from_the_reference_initialisation():
    """transformers' fresh Sam2Model draws its two positional-encoding matrices independently and every
    weight / embedding from N(0, 0.02); trained from that it never learns to use the prompt."""
    from videoseg_r1.training.segmenter_training import SmallSam2Config, build_small_sam2

    model, _ = build_small_sam2(SmallSam2Config(), seed=0)
    torch.testing.assert_close(model.prompt_encoder.shared_embedding.positional_embedding,
                               model.shared_image_embedding.positional_embedding, rtol=0, atol=0)
    # torch's defaults, as in facebookresearch/sam2: N(0, 1) embeddings, Kaiming-uniform Linear layers
    assert 0.8 < float(model.prompt_encoder.point_embed.weight.detach().std()) < 1.2
    assert 0.8 < float(model.mask_decoder.mask_tokens.weight.detach().std()) < 1.2
    q = model.mask_decoder.transformer.layers[0].self_attn.q_proj.weight.detach()
    assert abs(float(q.std()) - 1 / math.sqrt(3 * q.shape[1])) < 0.005
    again, _ = build_small_sam2(SmallSam2Config(), seed=0)  # still deterministic in the seed
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_train_small_xmem_resumes_and_loads(tmp_path, capsys):
    from videoseg_r1.config import PropagatorConfig
    from videoseg_r1.data.synthetic import generate_video
    from videoseg_r1.segmentation.propagation import XMemPropagator
    from videoseg_r1.segmentation.xmem import load_xmem
    from videoseg_r1.video import ArrayVideo

    mod, out = _script("train_small_xmem"), tmp_path / "xmem"
    assert mod.main(["--out", str(out), "--steps", "2", *XMEM_ARGS]) == 0
    assert (out / "checkpoints" / "step-0000002.pt").is_file()
    assert mod.main(["--out", str(out), "--steps", "3", *XMEM_ARGS]) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "at step 2" in text
    log = _finite_log(out, "J")
    assert [r["step"] for r in log["train"]] == [1, 2, 3]
    final = out / "final" / "xmem.safetensors"
    net = load_xmem(final)
    assert net.config.value_dim == 16 and net.config.backbone_width == 8
    from safetensors import safe_open
    with safe_open(str(final), "pt") as fh:
        assert all(fh.get_tensor(k).dtype in (torch.float16, torch.int64) for k in fh.keys())

    video = generate_video(4, "valid", 1, frames=5, size=(64, 48))
    ids = [int(i) for i in np.unique(video.label_maps[0]) if i][:2]
    prop = XMemPropagator(config=PropagatorConfig(checkpoint=str(final), device="cpu", short_side=48))
    out_masks = dict(prop.propagate(ArrayVideo(list(video.frames)), 2, {k: video.label_maps[2] == k for k in ids}))
    assert sorted(out_masks) == list(range(5))
    assert all(sorted(m) == sorted(ids) and m[ids[0]].shape == (48, 64) for m in out_masks.values())


def test_sample_prompt_follows_the_reasoner_convention():
    from videoseg_r1.training.segmenter_training import sample_prompt

    mask = np.zeros((40, 50), bool)
    mask[10:25, 12:30] = True
    det = sample_prompt(mask, None)
    assert det["box"] == (12.0, 10.0, 29.0, 24.0)
    x, y = det["point"]
    assert mask[int(y), int(x)] and 15 <= x <= 26 and 13 <= y <= 21
    nx, ny = det["neg_point"]
    assert not mask[int(ny), int(nx)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = sample_prompt(mask, rng)
        x1, y1, x2, y2 = p["box"]
        assert 0 <= x1 <= x2 <= 49 and 0 <= y1 <= y2 <= 39 and abs(x1 - 12) <= 2 and abs(y2 - 24) <= 2
        assert mask[int(round(p["point"][1])), int(round(p["point"][0]))]
        nx, ny = p["neg_point"]
        assert not mask[int(ny), int(nx)]
        dy = max(10 - ny, 0, ny - 24)
        dx = max(12 - nx, 0, nx - 29)
        assert 0 < math.hypot(dx, dy) <= max(2.0, 0.15 * math.sqrt(mask.sum())) + 1e-6


def test_training_readout_equals_dense_inference_similarity():
    from videoseg_r1.segmentation.xmem.memory import similarity
    from videoseg_r1.training.xmem_training import read_memory

    g = torch.Generator().manual_seed(0)
    ck, t, h, w, n, cv = 4, 3, 2, 3, 2, 5
    qk, qe = torch.randn(1, ck, h, w, generator=g), torch.rand(1, ck, h, w, generator=g)
    mk, ms = torch.randn(1, ck, t, h, w, generator=g), 1 + torch.rand(1, 1, t, h, w, generator=g)
    mv = torch.randn(1, n, cv, t, h, w, generator=g)
    out = read_memory(qk, qe, mk, ms, mv)
    sim = similarity(mk[0].flatten(1), ms[0].flatten(1), qk[0].flatten(1), qe[0].flatten(1))  # (L, Q)
    ref = (mv[0].flatten(2).flatten(0, 1) @ torch.softmax(sim, 0)).view(n, cv, h, w)
    torch.testing.assert_close(out[0], ref, rtol=1e-4, atol=1e-5)


def test_fit_minutes_cuts_the_schedule_and_writes_the_final_model(tmp_path, capsys, monkeypatch):
    import videoseg_r1.training.segmenter_training as st

    monkeypatch.setattr(st, "FIT_WARMUP_STEPS", 1)
    monkeypatch.setattr(st, "FIT_PROBE_STEPS", 2)
    mod, out = _script("train_small_sam2"), tmp_path / "sam2"
    # 1000 steps never fit in 0.001 minutes: the run is cut right after the 3 timed steps
    args = [a if a != "2" or i < 2 else "1000" for i, a in enumerate(SAM2_ARGS)]  # eval/save rarely
    assert mod.main(["--out", str(out), "--steps", "1000", "--fit-minutes", "0.001", *args]) == 0
    assert "1000 steps cut to 4" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == summary["steps"] == 4 and summary["done"]
    assert (out / "final" / "model.safetensors").is_file()
    log = json.loads((out / "train_log.json").read_text())
    assert log["train"][-1]["step"] == 4 and log["train"][-1]["lr"] < 1e-5  # annealed to the cut length
