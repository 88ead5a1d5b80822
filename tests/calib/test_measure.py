"""Residual-stream statistics measured with the calibration windows: what a rotation would act on."""

from __future__ import annotations

import pytest
import torch

from moequant.calib.measure import ResidualMoments, measure
from moequant.models import adapt
from moequant.models.synthetic import tiny_model


def test_a_massive_channel_and_a_gaussian_stream_read_as_such() -> None:
    generator = torch.Generator().manual_seed(0)
    gaussian = torch.randn(4096, 64, generator=generator, dtype=torch.float64)
    spiky = gaussian.clone()
    spiky[:, 7] *= 50.0
    moments = ResidualMoments(2)
    for half in gaussian.split(2048):
        moments.add(0, half)
    moments.add(1, spiky)
    summary = moments.summary()
    assert summary["kurtosis"][0] == pytest.approx(3.0, abs=0.1)
    assert summary["channel_max_over_rms"][0] == pytest.approx(1.0, abs=0.1)
    assert summary["channel_max_over_rms"][1] > 7.5, "one channel 50× the rest: max/RMS ≈ √(64·2500/2563)"
    assert summary["kurtosis"][1] > 30


def test_measure_reports_one_entry_per_decoder_layer() -> None:
    model = tiny_model("deepseek_v3")
    stats = measure(adapt(model), torch.randint(4, 90, (3, 12), generator=torch.Generator().manual_seed(1)), 2)
    assert stats.residual is not None
    assert len(stats.residual["kurtosis"]) == len(stats.residual["channel_max_over_rms"]) == model.config.num_hidden_layers
    assert all(not layer._forward_pre_hooks for layer in model.model.layers), "the hooks are removed"
