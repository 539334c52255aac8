"""Shared test setup: everything runs offline on the CPU with tiny models and generated data."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest


@pytest.fixture(scope="session")
def tiny_model_args(tmp_path_factory):
    """The command-line flags naming a tiny random reasoner, SAM2 and XMem, saved once per session."""
    from videoseg_r1.reasoning.tiny import save_tiny_reasoner
    from videoseg_r1.segmentation.tiny import build_tiny_sam2, build_tiny_xmem, save_sam2, save_xmem

    d = tmp_path_factory.mktemp("tiny_models")
    save_tiny_reasoner(d / "reasoner")
    save_sam2(*build_tiny_sam2(), d / "sam2")
    save_xmem(build_tiny_xmem(), d / "xmem.pth")
    return ["--reasoner", str(d / "reasoner"), "--sam2", str(d / "sam2"), "--xmem", str(d / "xmem.pth"),
            "--device", "cpu"]
