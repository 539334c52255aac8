"""SAM2-video propagation with a tiny random transformers Sam2VideoModel (CPU, offline)."""

import numpy as np
import pytest

from videoseg_r1.config import PropagatorConfig
from videoseg_r1.segmentation.propagation import Propagator, make_propagator, propagation_order
from videoseg_r1.segmentation.sam2_video import Sam2VideoPropagator, load_sam2_video
from videoseg_r1.segmentation.tiny import build_tiny_sam2_video, save_sam2
from videoseg_r1.video import ArrayVideo

H, W = 36, 52


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_sam2_video(seed=0, image_size=64)


def _video(n):
    rng = np.random.default_rng(1)
    return ArrayVideo([rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)])


def _masks():
    a = np.zeros((H, W), bool)
    a[5:20, 5:25] = True
    b = np.zeros((H, W), bool)
    b[20:30, 30:45] = True
    return {4: a, 9: b}


def test_order_shapes_and_key_frame(tiny):
    model, processor = tiny
    prop = Sam2VideoPropagator(PropagatorConfig(device="cpu"), model=model, processor=processor, chunk=2)
    assert isinstance(prop, Propagator)
    masks = _masks()
    out = list(prop.propagate(_video(5), 2, masks))
    assert [t for t, _ in out] == propagation_order(5, 2) == [2, 3, 4, 1, 0]
    for obj in masks:
        np.testing.assert_array_equal(out[0][1][obj], masks[obj])
    for _, frame_masks in out:
        assert sorted(frame_masks) == [4, 9]
        assert all(m.shape == (H, W) and m.dtype == bool for m in frame_masks.values())


def test_backward_pass_does_not_see_forward_frames(tiny):
    """After the reset, backward equals a backward-only run (both start from the key-frame output)."""
    model, processor = tiny
    cfg = PropagatorConfig(device="cpu")
    both = dict(Sam2VideoPropagator(cfg, model=model, processor=processor).propagate(_video(4), 2, _masks()))
    bwd = dict(Sam2VideoPropagator(cfg, model=model, processor=processor, directions="backward")
               .propagate(_video(4), 2, _masks()))
    assert sorted(bwd) == [0, 1, 2]
    for t in (0, 1):
        for obj in _masks():
            np.testing.assert_array_equal(both[t][obj], bwd[t][obj])


def test_make_propagator_backend_and_offline_error(tiny, tmp_path):
    folder = save_sam2(*tiny, tmp_path / "tiny-sam2-video")
    prop = make_propagator(PropagatorConfig(backend="sam2_video", sam2_video_model=str(folder), device="cpu"))
    assert isinstance(prop, Sam2VideoPropagator)
    assert [t for t, _ in prop.propagate(_video(2), 0, _masks())] == [0, 1]
    with pytest.raises(RuntimeError, match="facebook/sam2.1-hiera-large"):
        load_sam2_video("facebook/sam2.1-hiera-large")


def test_image_processor_only_folder_and_image_model_folder(tiny, tmp_path):
    # a video model saved with the image processor only (as a Sam2Model folder is): the video processor
    # is built from the image processor's settings and propagation runs
    from transformers import Sam2Processor

    folder = save_sam2(*tiny, tmp_path / "video-model")
    model, processor = tiny
    for name in ("video_preprocessor_config.json", "processor_config.json", "preprocessor_config.json"):
        (folder / name).unlink(missing_ok=True)
    Sam2Processor(processor.image_processor, target_size=processor.target_size).save_pretrained(folder)
    assert not (folder / "video_preprocessor_config.json").is_file()
    _, loaded = load_sam2_video(str(folder))
    assert dict(loaded.video_processor.size) == dict(processor.image_processor.size)
    prop = make_propagator(PropagatorConfig(backend="sam2_video", sam2_video_model=str(folder), device="cpu"))
    assert [t for t, _ in prop.propagate(_video(2), 0, _masks())] == [0, 1]
    # an image model (no memory modules, like the shipped small SAM2): one clear error
    from videoseg_r1.segmentation.tiny import build_tiny_sam2

    image_folder = save_sam2(*build_tiny_sam2(seed=0), tmp_path / "image-model")
    with pytest.raises(RuntimeError, match="image model.*--propagator xmem"):
        load_sam2_video(str(image_folder))
