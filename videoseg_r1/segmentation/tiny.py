"""Tiny randomly initialised segmentation models: SAM2 (image and video, real transformers classes with
a reduced config) and our XMem with small widths, plus save functions.

Used by the CPU tests and by the issue that trains small shipped models; the saved folders/files load
through the same code paths as the real checkpoints (``KeyFrameSegmenter(model=folder)``,
``Sam2VideoPropagator(model=folder)``, ``load_xmem(path)``). Nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

TINY_SAM2_IMAGE_SIZE = 128  # input side of the tiny SAM2 (the real one uses 1024)


def _tiny_sam2_parts(image_size: int = TINY_SAM2_IMAGE_SIZE, hidden: int = 32) -> dict:
    s = image_size // 4  # stride-4 feature size
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1,
                    image_size=[image_size, image_size], blocks_per_stage=[1, 1, 2, 1],
                    embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 1, 1],
                    window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],
                    window_positional_embedding_background_size=[2, 2])
    vision = dict(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                  backbone_feature_sizes=[[s, s], [s // 2, s // 2], [s // 4, s // 4]], fpn_hidden_size=hidden)
    prompt = dict(hidden_size=hidden, image_size=image_size, patch_size=16)
    decoder = dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    return dict(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def build_tiny_sam2(seed: int = 0, image_size: int = TINY_SAM2_IMAGE_SIZE):
    """(Sam2Model, Sam2Processor) with ~0.35M random parameters and a ``image_size`` input."""
    import torch
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    torch.manual_seed(seed)
    model = Sam2Model(Sam2Config(**_tiny_sam2_parts(image_size))).eval()
    image_processor = Sam2ImageProcessor(size={"height": image_size, "width": image_size},
                                         mask_size={"height": image_size // 4, "width": image_size // 4})
    return model, Sam2Processor(image_processor=image_processor)


def build_tiny_sam2_video(seed: int = 0, image_size: int = TINY_SAM2_IMAGE_SIZE):
    """(Sam2VideoModel, Sam2VideoProcessor), tiny and random, same vision trunk shape as above."""
    import torch
    from transformers import (Sam2ImageProcessor, Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor,
                              Sam2VideoVideoProcessor)

    torch.manual_seed(seed)
    s16 = image_size // 16
    # object pointers (hidden wide) are split into hidden / 64 memory tokens (the memory width 64 is
    # hard-wired in memory attention), so the tiny video model keeps hidden = 128
    hidden = 128
    config = Sam2VideoConfig(**_tiny_sam2_parts(image_size, hidden), image_size=image_size,
                             memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
                             memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[s16, s16],
                             memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64,
                             mask_downsampler_embed_dim=hidden, memory_fuser_embed_dim=hidden,
                             memory_fuser_intermediate_dim=64, num_maskmem=3)
    model = Sam2VideoModel(config).eval()
    size = {"height": image_size, "width": image_size}
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size, mask_size={"height": image_size // 4, "width": image_size // 4}),
        video_processor=Sam2VideoVideoProcessor(size=size))
    return model, processor


def save_sam2(model, processor, folder: str | Path) -> Path:
    """Write a SAM2 (image or video) model and its processor as a hub-style folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_xmem_config():
    """Small widths, ResNet-18 key encoder with stem width 8: ~0.16M parameters."""
    from videoseg_r1.segmentation.xmem.network import XMemConfig

    return XMemConfig(key_dim=8, value_dim=16, hidden_dim=8, key_backbone="resnet18", value_backbone="resnet18",
                      backbone_width=8, decoder_dims=(16, 8, 8))


def build_tiny_xmem(seed: int = 0, single_object: bool = False):
    """Our XMem with :func:`tiny_xmem_config` and random weights, in eval mode. BatchNorm statistics
    are randomised a little so that eval-mode outputs are not degenerate."""
    import torch

    from videoseg_r1.segmentation.xmem.network import XMem, XMemConfig

    torch.manual_seed(seed)
    cfg = tiny_xmem_config()
    if single_object:
        cfg = XMemConfig(**{**cfg.to_dict(), "single_object": True})
    net = XMem(cfg)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def save_xmem(network, path: str | Path) -> Path:
    """Write a flat state dict, like the official ``XMem.pth``, atomically."""
    import os

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path
