"""Our SFT collator equals TRL's vision collator (tiny Qwen2.5-VL processor, CPU)."""

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def processor():
    from videoseg_r1.reasoning.tiny import build_tiny_processor

    return build_tiny_processor()


def _examples():
    from videoseg_r1.training.samples import image_prompt

    rng = np.random.default_rng(0)

    def img(h, w, mode="RGB"):
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)

    return [
        {"prompt": image_prompt('Please find "the red square".', [0.0, 1.5]),
         "completion": [{"role": "assistant", "content": '<answer>[{"bbox_2d": [1, 2, 30, 40]}]</answer>'}],
         "images": [img(56, 56), img(112, 84)]},
        {"prompt": image_prompt("Where is it?", [2.0]),
         "completion": [{"role": "assistant", "content": "<answer>[0.5, 2.0]</answer>"}],
         "images": [img(60, 70)]},  # resized by the processor (not a multiple of 28): the fallback path
        {"prompt": image_prompt("Grey one", [0.0]),
         "completion": [{"role": "assistant", "content": "ok"}],
         "images": [img(56, 56, "L")]},  # not RGB: the fallback path
    ]


def test_equals_trl_collator(processor):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from videoseg_r1.training.collate import VisionSFTCollator

    trl_batch = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)(_examples())
    ours = VisionSFTCollator(processor)(_examples())
    assert set(ours) == set(trl_batch), (set(ours), set(trl_batch))
    mask = trl_batch["attention_mask"].bool()
    assert torch.equal(ours["attention_mask"], trl_batch["attention_mask"])
    assert torch.equal(ours["input_ids"][mask], trl_batch["input_ids"][mask])
    assert torch.equal(ours["labels"], trl_batch["labels"])
    assert torch.equal(ours["mm_token_type_ids"][mask], trl_batch["mm_token_type_ids"][mask])
    assert torch.equal(ours["image_grid_thw"], trl_batch["image_grid_thw"])
    assert ours["pixel_values"].shape == trl_batch["pixel_values"].shape
    assert (ours["pixel_values"] - trl_batch["pixel_values"]).abs().max().item() < 1e-5
    # the completion is what the loss sees, and it ends with the turn's end token
    labels = ours["labels"][0][ours["labels"][0] != -100].tolist()
    assert processor.tokenizer.decode(labels).startswith("<answer>")


def test_placeholder_count_mismatch_is_an_error(processor):
    from videoseg_r1.training.collate import VisionSFTCollator

    bad = _examples()[:1]
    bad[0]["images"] = bad[0]["images"][:1]
    with pytest.raises(ValueError):
        VisionSFTCollator(processor)(bad)
