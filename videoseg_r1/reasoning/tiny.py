"""A tiny, randomly initialised Qwen2.5-VL (real transformers classes) built entirely offline.

Used by CPU tests (reasoner, GRPO, pipeline) and as the starting point of the small model shipped
with the repo. Everything is made in code: a byte-level BPE tokenizer trained on a small built-in
corpus (the Qwen chat/vision special tokens, the think/answer tags, digits, JSON punctuation and
the words of our prompt templates), a Qwen-style chat template, the image and video processors,
and a model with hidden size 64 and 2 layers. Byte-level BPE means ANY text can be encoded.

    >>> from videoseg_r1.reasoning.tiny import save_tiny_reasoner
    >>> path = save_tiny_reasoner("/tmp/tiny-qwen")          # doctest: +SKIP
    >>> from videoseg_r1.reasoning.reasoner import Reasoner
    >>> reasoner = Reasoner.from_pretrained(path)            # doctest: +SKIP

Numbers (``numbers=``): ``"bpe"`` lets BPE merge digits as it likes (the first shipped model: '127'
became 12|7, '163' 1|6|3); ``"digits"`` writes every digit as its own token; ``"integers"`` adds one
token per integer 0 .. ``NUMBER_TOKENS - 1`` (a location token per pixel of the model input, as
Pix2Seq / Kosmos-2 / PaliGemma give a token per coordinate bin). The answer text stays SPEC's JSON in
every mode, so THE parser and the rewards read it unchanged.

A random model would happily emit ``<|image_pad|>`` / ``<|video_pad|>`` tokens, which break the
next forward pass; ``TINY_SUPPRESSED_TOKENS`` are written as ``suppress_tokens`` into the saved
``generation_config.json`` (and the Reasoner suppresses placeholder tokens for every model anyway).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Ordinary (non-special) added tokens: kept when decoding with skip_special_tokens=True.
TINY_TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
TINY_SUPPRESSED_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|vision_start|>", "<|vision_end|>",
                          "<|image_pad|>", "<|video_pad|>"]
TINY_BPE_VOCAB_SIZE = 640  # byte alphabet (256) + merges; ours
NUMBER_MODES = ("bpe", "digits", "integers")
NUMBER_TOKENS = 1001  # "integers": one token each for 0 .. 1000 (pixels of inputs up to 1000 px, and 0-1000
#   normalised coordinates); larger numbers are written with several of them

# A Qwen2.5-VL-style chat template (default system message, image/video placeholders).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS_EXTRA = [
    "0 1 2 3 4 5 6 7 8 9 10 11 12 20 30 40 50 64 100 128 200 255 300 420 512 640 839 840",
    '[{"bbox_2d": [10, 100, 200, 210], "point_2d": [30, 110], "neg_point_2d": [5, 95]}]',
    "[3.5, 8.0] 0.4 40% seconds frames from to between and s",
    "<think> the object on the left is the dog that jumps first </think><answer>[]</answer>",
    "You are a helpful assistant. system user assistant",
    "the a an of in on at is are it this that which what where who object objects person man woman "
    "dog cat car horse bird ball left right top bottom middle first last moving jumping running red "
    "blue green white black small large video frame image clip time interval position answer query",
]


def _corpus() -> list[str]:
    from importlib import resources

    lines = list(_CORPUS_EXTRA)
    try:
        folder = resources.files("videoseg_r1.reasoning") / "templates"
        for item in sorted(folder.iterdir(), key=lambda p: p.name):
            if item.name.endswith(".txt"):
                lines.extend(item.read_text().splitlines())
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
        pass
    return lines


def build_tiny_tokenizer(numbers: str = "bpe"):
    """A byte-level BPE ``TokenizersBackend`` (fast tokenizer) with the Qwen special tokens.

    ``numbers``: how digits are tokenised (``NUMBER_MODES``, module docstring). Deterministic: the
    same corpus, vocabulary size and mode give the same vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if numbers not in NUMBER_MODES:
        raise ValueError(f"numbers must be one of {NUMBER_MODES}, got {numbers!r}")
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # digits split off one by one before BPE sees them: no merge can ever contain a digit
    tok.pre_tokenizer = byte_level if numbers == "bpe" else pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_BPE_VOCAB_SIZE,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=TINY_SPECIAL_TOKENS[1:],
        clean_up_tokenization_spaces=False,
    )
    fast.add_tokens(TINY_TAG_TOKENS)
    if numbers == "integers":  # matched longest first: "127" -> one token, "1234" -> "123" + "4"
        fast.add_tokens([str(i) for i in range(NUMBER_TOKENS)])
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def tiny_config(vocab_size: int, token_ids: dict[str, int], **overrides: Any):
    """A ``Qwen2_5_VLConfig`` small enough for CPU tests (hidden 64, 2 layers, 2-block vision tower).

    Vision: patch 14, spatial merge 2, temporal patch 2 (the real values), so a 56x56 frame gives
    2x2 = 4 visual tokens per image or per pair of video frames.
    """
    from transformers import Qwen2_5_VLConfig

    text = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=token_ids["<|endoftext|>"], eos_token_id=token_ids["<|im_end|>"],
        pad_token_id=token_ids["<|endoftext|>"],
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
        patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
        fullatt_block_indexes=[1], tokens_per_second=2,
    )
    text.update(overrides.pop("text_config", {}))
    vision.update(overrides.pop("vision_config", {}))
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False, **overrides,
    )


def build_tiny_processor(tokenizer=None):
    """``Qwen2_5_VLProcessor`` with the tiny tokenizer; image/video sizes allowed down to 56x56."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = tokenizer or build_tiny_tokenizer()
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 840 * 840}
    image_processor = Qwen2VLImageProcessor(size=dict(pixels))
    video_processor = Qwen2VLVideoProcessor(size=dict(pixels))
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor, chat_template=TINY_CHAT_TEMPLATE)


def build_tiny_reasoner(seed: int = 0, numbers: str = "bpe", **config_overrides: Any):
    """(model, processor): a random tiny ``Qwen2_5_VLForConditionalGeneration`` in float32, eval mode;
    ``numbers`` picks the tokenizer's number mode (module docstring)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    processor = build_tiny_processor(build_tiny_tokenizer(numbers))
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in TINY_SPECIAL_TOKENS}
    config = tiny_config(len(tok), ids, **config_overrides)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        suppress_tokens=[ids[t] for t in TINY_SUPPRESSED_TOKENS],
    )
    return model, processor


def save_tiny_reasoner(path: str | Path, seed: int = 0, numbers: str = "bpe", **config_overrides: Any) -> Path:
    """Write a tiny random Qwen2.5-VL (weights, config, tokenizer, processor, chat template) to ``path``.

    The folder loads with ``Reasoner.from_pretrained(path)`` and with transformers'
    ``AutoModelForImageTextToText`` / ``AutoProcessor``. Returns the path.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_reasoner(seed=seed, numbers=numbers, **config_overrides)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
