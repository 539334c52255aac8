"""The SFT batch collator of our trainers: TRL's vision prompt-completion batches, without the host cost.

TRL's ``DataCollatorForVisionLanguageModeling`` runs the processor on every batch: PIL resizing,
rescaling and normalising each image, and tokenising prompts whose image placeholders are already
expanded to hundreds of tokens. For frames already at a size the processor keeps (our samples are
square, a multiple of 28 px), :class:`VisionSFTCollator` gives the same tensors faster:

* images are normalised and cut into patches with a few tensor reshapes (the order Qwen2-VL's
  image processor uses: temporal patch, merge window, channel, pixel);
* prompts are tokenised with one ``<|image_pad|>`` per image, which is then repeated to the image's
  token count, instead of tokenising the expanded text;
* the row is prompt + completion, right-padded; labels are -100 outside the completion (TRL's
  ``completion_only_loss``) and ``mm_token_type_ids`` marks image tokens, as the processor does.

An image the processor would resize, or one not in RGB, goes through the processor itself, so the
result never depends on the path taken (``tests/test_collate.py`` checks it equals TRL's collator).
Used by ``training.sft`` for every vision dataset, in the DataLoader's worker processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class VisionSFTCollator:
    """``collator(examples) -> batch`` for conversational prompt-completion samples with ``images``.

    Batch: ``input_ids``/``attention_mask``/``labels`` (B, L), ``mm_token_type_ids`` (B, L) when the
    processor makes them, ``pixel_values`` (sum of patches, C·T·P·P) and ``image_grid_thw`` (images, 3).
    """

    def __init__(self, processor, completion_only_loss: bool = True, max_length: int | None = None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_processor = processor.image_processor
        self.completion_only_loss = completion_only_loss
        self.max_length = max_length
        ip = self.image_processor
        self.patch = int(ip.patch_size)
        self.merge = int(ip.merge_size)
        self.temporal = int(ip.temporal_patch_size)
        self.mean = np.asarray(ip.image_mean, dtype=np.float32)
        self.std = np.asarray(ip.image_std, dtype=np.float32)
        size = getattr(ip, "size", None)
        self.min_pixels = int(getattr(size, "shortest_edge", None) or getattr(ip, "min_pixels", 56 * 56))
        self.max_pixels = int(getattr(size, "longest_edge", None) or getattr(ip, "max_pixels", 28 * 28 * 1280))
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids(processor.image_token))
        self.pad_token_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                                else self.tokenizer.eos_token_id)
        probe = processor(text=["x"], return_tensors="np")
        self.mm_token_types = "mm_token_type_ids" in probe

    # ---------------------------------------------------------------- images

    def _kept_size(self, height: int, width: int) -> bool:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        factor = self.patch * self.merge
        return smart_resize(height, width, factor=factor, min_pixels=self.min_pixels,
                            max_pixels=self.max_pixels) == (height, width)

    def _patches(self, image) -> tuple[np.ndarray, tuple[int, int, int]]:
        """(patches (h·w, C·T·P·P) float32, grid (1, h, w)) of one image, as the image processor makes them."""
        array = np.asarray(image)
        mode = getattr(image, "mode", "RGB")
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or mode != "RGB" \
                or not self._kept_size(array.shape[0], array.shape[1]):
            out = self.image_processor(images=[image], return_tensors="np")
            grid = tuple(int(v) for v in out["image_grid_thw"][0])
            return np.asarray(out["pixel_values"], dtype=np.float32), grid
        p, m, t = self.patch, self.merge, self.temporal
        h, w = array.shape[0] // p, array.shape[1] // p
        x = (array.astype(np.float32) * np.float32(1 / 255) - self.mean) / self.std  # (H, W, C)
        x = x.transpose(2, 0, 1).reshape(3, h // m, m, p, w // m, m, p)  # C, h/m, m, P, w/m, m, P
        x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # h/m, w/m, m, m, C, P, P
        x = np.broadcast_to(x[:, :, :, :, :, None], x.shape[:5] + (t,) + x.shape[5:])  # one image = t equal frames
        return np.ascontiguousarray(x).reshape(h * w, 3 * t * p * p), (1, h, w)

    # ---------------------------------------------------------------- text

    def _texts(self, example: dict) -> tuple[str, str]:
        from trl.data_utils import apply_chat_template, prepare_multimodal_messages

        row = {"prompt": prepare_multimodal_messages(example["prompt"], images=example["images"]),
               "completion": prepare_multimodal_messages(example["completion"])}
        texts = apply_chat_template(row, self.processor)
        return texts["prompt"], texts["completion"]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        prompts, completions, pixels, grids = [], [], [], []
        for example in examples:
            prompt, completion = self._texts(example)
            prompts.append(prompt)
            completions.append(completion)
            for image in example["images"] or []:
                patches, grid = self._patches(image)
                pixels.append(patches)
                grids.append(grid)
        tok = self.tokenizer
        prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        completion_ids = tok(completions, add_special_tokens=False)["input_ids"]
        per_image = [g[0] * g[1] * g[2] // (self.merge ** 2) for g in grids]
        rows, types, starts = [], [], []
        image = 0
        for ids, done in zip(prompt_ids, completion_ids):
            row, kind = [], []
            for i in ids:
                if i == self.image_token_id:
                    if image >= len(per_image):
                        raise ValueError("more image placeholders in the prompts than images in the samples")
                    row.extend([i] * per_image[image])
                    kind.extend([1] * per_image[image])
                    image += 1
                else:
                    row.append(i)
                    kind.append(0)
            starts.append(len(row))
            rows.append(row + list(done))
            types.append(kind + [0] * len(done))
        if image != len(per_image):
            raise ValueError(f"{len(per_image)} images but {image} image placeholders in the prompts")
        if self.max_length is not None:
            rows = [r[: self.max_length] for r in rows]
            types = [k[: self.max_length] for k in types]
        width = max(len(r) for r in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        token_types = torch.zeros((n, width), dtype=torch.long)
        for b, (row, kind, start) in enumerate(zip(rows, types, starts)):
            input_ids[b, : len(row)] = torch.tensor(row)
            attention[b, : len(row)] = 1
            token_types[b, : len(kind)] = torch.tensor(kind)
            first = min(start, len(row)) if self.completion_only_loss else 0
            labels[b, first: len(row)] = input_ids[b, first: len(row)]
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if self.mm_token_types:
            batch["mm_token_type_ids"] = token_types
        if pixels:
            batch["pixel_values"] = torch.from_numpy(np.concatenate(pixels))
            batch["image_grid_thw"] = torch.tensor(grids, dtype=torch.long)
        return batch
