"""Mixed precision that keeps the stem in fp32."""

from __future__ import annotations

import torch

from brain_tumor.model import build_classifier, forward_fp32_stem


def test_fp32_stem_forward_is_the_plain_forward_in_fp32() -> None:
    torch.manual_seed(0)
    net = build_classifier("none", 3).eval()
    x = torch.randn(2, 3, 64, 64) * 100  # caffe-scale inputs
    with torch.no_grad():
        assert torch.allclose(forward_fp32_stem(net, x), net(x), atol=1e-5)


def test_stem_stays_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    net = build_classifier("none", 3).eval()
    seen: dict[str, torch.dtype] = {}
    net.bn1.register_forward_hook(lambda m, i, o: seen.__setitem__("bn1", o.dtype))
    net.layer2.register_forward_hook(lambda m, i, o: seen.__setitem__("layer2", o.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = forward_fp32_stem(net, torch.randn(2, 3, 64, 64) * 100)
    assert seen == {"bn1": torch.float32, "layer2": torch.bfloat16}
    assert out.shape == (2, 3)
