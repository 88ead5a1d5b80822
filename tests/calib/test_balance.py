from __future__ import annotations

import math

import pytest
import torch

from moequant.calib.balance import expert_usage, layer_sigma, routed_counts, sigma
from moequant.calib.measure import measure
from moequant.models import adapt
from moequant.models.routing import capture_routing, expert_counts


def test_sigma_matches_hand_computation() -> None:
    # Layer 0 balanced: u = ¼ each, σ_0 = 0.
    # Layer 1 [3, 1, 0, 0]: u = [.75, .25, 0, 0], mean .25, squares .25 + 0 + .0625 + .0625 = .375, /3 → σ_1 = √.125.
    counts = torch.tensor([[2, 2, 2, 2], [3, 1, 0, 0]])
    assert expert_usage(counts)[1].tolist() == [0.75, 0.25, 0.0, 0.0]
    assert layer_sigma(counts).tolist() == pytest.approx([0.0, math.sqrt(0.125)])
    assert float(sigma(counts)) == pytest.approx(math.sqrt(0.125) / 2)


def test_sigma_is_per_sample_over_leading_dims() -> None:
    counts = torch.tensor([[[4, 0, 0, 0]], [[1, 1, 1, 1]]])
    # [4, 0, 0, 0]: u = [1, 0, 0, 0], squares .5625 + 3·.0625 = .75, /3 → σ = .5
    assert sigma(counts).tolist() == pytest.approx([0.5, 0.0])


@pytest.mark.parametrize("layout", ["mixtral", "deepseek_v3", "deepseek_remote"])
def test_routed_counts_agree_with_adapter_expert_counts(make_tiny, layout: str) -> None:
    adapter = adapt(make_tiny(layout))
    ids = torch.randint(3, 96, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture_routing(adapter) as records:
        adapter.model(input_ids=ids, use_cache=False)
    per_row = routed_counts(records, [layer.index for layer in adapter.moe_layers], 3, adapter.num_experts)
    assert per_row.shape == (3, len(adapter.moe_layers), adapter.num_experts)
    assert torch.equal(per_row.sum(dim=0), expert_counts(adapter, ids))
    assert torch.equal(per_row.sum(dim=-1), torch.full(per_row.shape[:2], 10 * adapter.top_k))
    single = measure(adapter, ids[1:2], batch_size=1).counts[0]
    assert torch.equal(single, per_row[1])
