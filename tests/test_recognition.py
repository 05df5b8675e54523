"""Recogniser building blocks: MobileFaceNet shapes and the margin heads against their formulas."""

import pytest
import torch

from idgen.recognition import MarginHead, MobileFaceNet

def test_mobilefacenet_shapes_and_parameter_count():
    model = MobileFaceNet().eval()
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
    assert 0.9e6 < sum(p.numel() for p in model.parameters()) < 1.3e6  # the paper's ~1 M parameters
    assert MobileFaceNet(64, width=0.5, input_size=64).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 64)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_heads_penalise_only_the_true_class(kind):
    head = MarginHead(8, 5, kind, s=10.0, m=0.3)
    embeddings = torch.randn(4, 8)
    labels = torch.tensor([0, 3, 1, 4])
    logits = head(embeddings, labels)
    cosine = torch.nn.functional.normalize(embeddings) @ torch.nn.functional.normalize(head.weight).T
    expected = cosine.clone()
    rows = torch.arange(4)
    true = cosine[rows, labels]
    expected[rows, labels] = torch.cos(torch.acos(true) + 0.3) if kind == "arcface" else true - 0.3
    assert torch.allclose(logits, 10.0 * expected, atol=1e-5)
