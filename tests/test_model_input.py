"""Raw uint8 pixels from the datasets become the model's normalised float input on the device."""

import pytest
import torch

from vidnl.data.model_input import InputNormalizer, normalize_pixels


def test_normalize_pixels_matches_the_reference_formula_and_layout():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 4, 5, 6, 3), dtype=torch.uint8, generator=g)  # B×T×H×W×C
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.25, 0.5]
    out = normalize_pixels(x, mean, std)
    assert out.shape == (2, 3, 4, 5, 6) and out.dtype == torch.float32 and out.is_contiguous()
    ref = (x.double().permute(0, 4, 1, 2, 3) / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1, 1)) \
        / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    # one clip (no batch dimension) and a test batch of views have the same layout rule
    torch.testing.assert_close(normalize_pixels(x[1], mean, std), out[1])


def test_normalizer_passes_float_inputs_and_rejects_bad_pixels():
    norm = InputNormalizer([0.45, 0.45, 0.45], [0.225, 0.225, 0.225])
    flow = torch.randn(2, 2, 4, 8, 8)  # already model-ready (optical flow)
    assert norm(flow) is flow or torch.equal(norm(flow), flow)
    white = norm(torch.full((1, 2, 3, 3, 3), 255, dtype=torch.uint8))
    torch.testing.assert_close(white, torch.full((1, 3, 2, 3, 3), (1 - 0.45) / 0.225))
    with pytest.raises(ValueError, match=r"C = 3 .*got shape \(1, 2, 3, 3, 2\)"):
        norm(torch.zeros(1, 2, 3, 3, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="positive std"):
        InputNormalizer([0.5], [0.0])
