"""Our XMem network: official parameter names/shapes (strict loading), checkpoint loading and conversion,
shapes and dtypes of the three network passes. CPU only, tiny or meta-device networks."""

import pytest
import torch

from videoseg_r1.segmentation.tiny import build_tiny_xmem, save_xmem, tiny_xmem_config
from videoseg_r1.segmentation.xmem import XMem, XMemConfig, convert_single_object, load_xmem


def _bn(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _conv(prefix, out_c, in_c, k, bias=True):
    d = {f"{prefix}.weight": (out_c, in_c, k, k)}
    if bias:
        d[f"{prefix}.bias"] = (out_c,)
    return d


def _resnet_stage(prefix, blocks, in_c, planes, bottleneck, stride):
    d, exp = {}, 4 if bottleneck else 1
    for i in range(blocks):
        p = f"{prefix}.{i}"
        if bottleneck:
            d |= _conv(f"{p}.conv1", planes, in_c, 1, False) | _bn(f"{p}.bn1", planes)
            d |= _conv(f"{p}.conv2", planes, planes, 3, False) | _bn(f"{p}.bn2", planes)
            d |= _conv(f"{p}.conv3", planes * 4, planes, 1, False) | _bn(f"{p}.bn3", planes * 4)
        else:
            d |= _conv(f"{p}.conv1", planes, in_c, 3, False) | _bn(f"{p}.bn1", planes)
            d |= _conv(f"{p}.conv2", planes, planes, 3, False) | _bn(f"{p}.bn2", planes)
        if i == 0 and (stride != 1 or in_c != planes * exp):
            d |= _conv(f"{p}.downsample.0", planes * exp, in_c, 1, False) | _bn(f"{p}.downsample.1", planes * exp)
        in_c = planes * exp
    return d


def _group_res(prefix, in_c, out_c):
    d = _conv(f"{prefix}.conv1", out_c, in_c, 3) | _conv(f"{prefix}.conv2", out_c, out_c, 3)
    if in_c != out_c:
        d |= _conv(f"{prefix}.downsample", out_c, in_c, 3)
    return d


def _cbam(prefix, c):
    return {f"{prefix}.ChannelGate.mlp.1.weight": (c // 16, c), f"{prefix}.ChannelGate.mlp.1.bias": (c // 16,),
            f"{prefix}.ChannelGate.mlp.3.weight": (c, c // 16), f"{prefix}.ChannelGate.mlp.3.bias": (c,),
            f"{prefix}.SpatialGate.spatial.conv.weight": (1, 2, 7, 7), f"{prefix}.SpatialGate.spatial.conv.bias": (1,)}


def _fusion(prefix, x_in, g_in, g_mid, g_out):
    return _group_res(f"{prefix}.block1", x_in + g_in, g_mid) | _cbam(f"{prefix}.attention", g_mid) | \
        _group_res(f"{prefix}.block2", g_mid, g_out)


def official_xmem_shapes() -> dict[str, tuple]:
    """The parameter names and shapes of the released XMem.pth, written out from the official
    model/network.py, modules.py, cbam.py and resnet.py (hkchengrex/XMem): C^k=64, C^v=512, C^h=64."""
    d = _conv("key_encoder.conv1", 64, 3, 7, False) | _bn("key_encoder.bn1", 64)
    d |= _resnet_stage("key_encoder.res2", 3, 64, 64, True, 1)
    d |= _resnet_stage("key_encoder.layer2", 4, 256, 128, True, 2)
    d |= _resnet_stage("key_encoder.layer3", 6, 512, 256, True, 2)
    d |= _conv("value_encoder.conv1", 64, 5, 7, False) | _bn("value_encoder.bn1", 64)
    d |= _resnet_stage("value_encoder.layer1", 2, 64, 64, False, 1)
    d |= _resnet_stage("value_encoder.layer2", 2, 64, 128, False, 2)
    d |= _resnet_stage("value_encoder.layer3", 2, 128, 256, False, 2)
    d |= _fusion("value_encoder.fuser", 1024, 256, 512, 512)
    d |= _conv("value_encoder.hidden_reinforce.transform", 192, 512 + 64, 3)
    d |= _conv("key_proj.key_proj", 64, 1024, 3) | _conv("key_proj.d_proj", 1, 1024, 3) | \
        _conv("key_proj.e_proj", 64, 1024, 3)
    d |= _fusion("decoder.fuser", 1024, 512 + 64, 512, 512)
    d |= _conv("decoder.hidden_update.g16_conv", 256, 512, 1) | _conv("decoder.hidden_update.g8_conv", 256, 256, 1)
    d |= _conv("decoder.hidden_update.g4_conv", 256, 257, 1) | _conv("decoder.hidden_update.transform", 192, 320, 3)
    d |= _conv("decoder.up_16_8.skip_conv", 512, 512, 3) | _group_res("decoder.up_16_8.out_conv", 512, 256)
    d |= _conv("decoder.up_8_4.skip_conv", 256, 256, 3) | _group_res("decoder.up_8_4.out_conv", 256, 256)
    d |= _conv("decoder.pred", 1, 256, 3)
    return d


def test_default_network_has_the_official_names_and_shapes():
    with torch.device("meta"):
        net = XMem()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    official = official_xmem_shapes()
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: s for k, s in ours.items() if official[k] != s} == {}
    assert sum(v.numel() for v in net.parameters()) == pytest.approx(62.2e6, rel=0.01)  # the paper's 62.2M


def test_official_state_dict_loads_strictly():
    with torch.device("meta"):
        net = XMem()
        state = {k: torch.empty(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
                 for k, s in official_xmem_shapes().items()}
    result = net.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_single_object_checkpoint_is_converted(tmp_path):
    so = build_tiny_xmem(seed=1, single_object=True)
    assert so.value_encoder.conv1.weight.shape[1] == 4
    path = save_xmem(so, tmp_path / "so.pth")
    net = load_xmem(path)
    w = net.value_encoder.conv1.weight
    assert w.shape[1] == 5 and not net.training
    torch.testing.assert_close(w[:, :4], so.value_encoder.conv1.weight)
    assert torch.count_nonzero(w[:, 4]) == 0
    converted = convert_single_object(so.state_dict())
    assert converted["value_encoder.conv1.weight"].shape[1] == 5


def test_load_xmem_roundtrip_and_reads_architecture(tmp_path):
    net = build_tiny_xmem(seed=2)
    path = save_xmem(net, tmp_path / "tiny.pth")
    loaded = load_xmem(str(path))
    assert loaded.config == tiny_xmem_config()
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_load_xmem_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="XMem checkpoint not found"):
        load_xmem(tmp_path / "missing.pth")
    good = save_xmem(build_tiny_xmem(), tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="truncated"):
        load_xmem(truncated)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not an XMem state dict"):
        load_xmem(other)
    with pytest.raises(RuntimeError, match="cannot fetch the XMem checkpoint"):
        load_xmem("http://127.0.0.1:9/XMem.pth")


@pytest.mark.parametrize("hidden_dim", [8, 0])
def test_network_passes_shapes_and_dtypes(hidden_dim):
    torch.manual_seed(0)
    cfg = XMemConfig(**{**tiny_xmem_config().to_dict(), "hidden_dim": hidden_dim})
    net = XMem(cfg).eval()
    b, n, H, W = 2, 3, 64, 96
    with torch.inference_mode():
        key, shrink, sel, f16, f8, f4 = net.encode_key(torch.randn(b, 3, H, W))
        assert key.shape == (b, 8, H // 16, W // 16) and sel.shape == key.shape
        assert shrink.shape == (b, 1, H // 16, W // 16) and bool((shrink >= 1).all())
        assert bool(((sel > 0) & (sel < 1)).all())
        assert f16.shape == (b, 32, H // 16, W // 16) and f8.shape == (b, 16, H // 8, W // 8)
        assert f4.shape == (b, 8, H // 4, W // 4)
        hidden = torch.zeros(1, n, hidden_dim, H // 16, W // 16)
        value, hidden2 = net.encode_value(torch.randn(1, 3, H, W), f16[:1], hidden, torch.rand(1, n, H, W))
        assert value.shape == (1, n, 16, H // 16, W // 16)
        assert hidden2.shape == hidden.shape
        new_hidden, logits, prob = net.segment(f16[:1], f8[:1], f4[:1], value, hidden2)
        assert logits.shape == prob.shape == (1, n + 1, H, W) and prob.dtype == torch.float32
        torch.testing.assert_close(prob.sum(1), torch.ones(1, H, W))
        if hidden_dim:
            assert new_hidden.shape == hidden.shape
        else:
            assert new_hidden is None
