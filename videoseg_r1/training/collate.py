"""The SFT batch collator of our trainers: TRL's vision prompt-completion batches, without the host cost.

TRL's ``DataCollatorForVisionLanguageModeling`` runs the processor on every batch: PIL resizing,
rescaling and normalising each image, and tokenising prompts whose image placeholders are already
expanded to hundreds of tokens. For frames already at a size the processor keeps (our samples are
square, a multiple of 28 px), :class:`VisionSFTCollator` gives the same tensors faster:

* images are normalised and cut into patches with a few tensor reshapes (the order Qwen2-VL's
  image processor uses: temporal patch, merge window, channel, pixel);
* an image given as an array several times in a batch (a stream video's frame) is cut once;
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
        seen: dict[int, tuple] = {}  # the same array shown in several samples is cut once
        for example in examples:
            prompt, completion = self._texts(example)
            prompts.append(prompt)
            completions.append(completion)
            for image in example["images"] or []:
                key = id(image) if isinstance(image, np.ndarray) else None
                if key is None or key not in seen:
                    value = self._patches(image)
                    if key is not None:
                        seen[key] = value
                patches, grid = seen[key] if key is not None else value
                pixels.append(patches)
                grids.append(grid)
        tok = self.tokenizer
        prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        completion_ids = tok(completions, add_special_tokens=False)["input_ids"]
        per_image = np.array([g[0] * g[1] * g[2] // (self.merge ** 2) for g in grids], dtype=np.int64)
        rows, starts, image = [], [], 0
        for ids, done in zip(prompt_ids, completion_ids):
            ids = np.asarray(ids, dtype=np.int64)
            slots = ids == self.image_token_id  # each placeholder becomes its image's token count
            count = int(slots.sum())
            if image + count > len(per_image):
                raise ValueError("more image placeholders in the prompts than images in the samples")
            repeats = np.ones(len(ids), dtype=np.int64)
            repeats[slots] = per_image[image: image + count]
            image += count
            prompt = np.repeat(ids, repeats)
            starts.append(len(prompt))
            rows.append(np.concatenate([prompt, np.asarray(done, dtype=np.int64)]))
        if image != len(per_image):
            raise ValueError(f"{len(per_image)} images but {image} image placeholders in the prompts")
        if self.max_length is not None:
            rows = [r[: self.max_length] for r in rows]
        width = max(len(r) for r in rows)
        n = len(rows)
        ids_np = np.full((n, width), self.pad_token_id, dtype=np.int64)
        attention_np = np.zeros((n, width), dtype=np.int64)
        labels_np = np.full((n, width), -100, dtype=np.int64)
        for b, (row, start) in enumerate(zip(rows, starts)):
            ids_np[b, : len(row)] = row
            attention_np[b, : len(row)] = 1
            first = min(start, len(row)) if self.completion_only_loss else 0
            labels_np[b, first: len(row)] = row[first:]
        input_ids = torch.from_numpy(ids_np)
        attention = torch.from_numpy(attention_np)
        labels = torch.from_numpy(labels_np)
        # image tokens are exactly the placeholder id (a completion never holds one: the tokenizer
        # only makes it from the special-token text, which answers do not contain)
        token_types = (input_ids == self.image_token_id).long() * attention
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if self.mm_token_types:
            batch["mm_token_type_ids"] = token_types
        if pixels:
            batch["pixel_values"] = torch.from_numpy(np.concatenate(pixels))
            batch["image_grid_thw"] = torch.tensor(grids, dtype=torch.long)
        return batch
