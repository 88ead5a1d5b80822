"""The adapter's pieces must reproduce each family's own forward exactly."""

from __future__ import annotations

import pytest
import torch

from moequant.models import adapt
from moequant.models.routing import capture_routing, expert_counts
from tests.conftest import LAYOUTS

FUSED = [layout for layout in LAYOUTS if layout != "deepseek_remote"]


def forward_from_parts(mlp, hidden: torch.Tensor) -> torch.Tensor:
    """The block's output recomputed from the adapter's routing, expert views and shared experts."""
    shape = hidden.shape
    x = hidden.reshape(-1, shape[-1])
    out = mlp.experts.routed_forward(x, *mlp.router.route(x))
    if mlp.shared_experts:
        out = out + mlp.shared_coefficient(x) * sum(shared(x) for shared in mlp.shared_experts)
    return out.reshape(shape)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_moe_block_output_recomputed_from_adapter_pieces(make_tiny, layout):
    model = make_tiny(layout, seed=1)
    adapter = adapt(model)
    hidden = torch.randn(3, 7, adapter.embed_tokens.embedding_dim)
    with torch.no_grad():
        for layer in adapter.moe_layers:
            expected = layer.mlp.module(hidden)
            torch.testing.assert_close(forward_from_parts(layer.mlp, hidden), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dense_layers_are_reported_dense(make_tiny, layout):
    adapter = adapt(make_tiny(layout))
    dense_expected = layout.startswith("deepseek")
    assert (not adapter.layers[0].is_moe) == dense_expected
    assert all(layer.is_moe for layer in adapter.layers[1:])


@pytest.mark.parametrize("layout", FUSED)
def test_routing_function_matches_what_experts_received(make_tiny, layout):
    """Capture (top_k_index, top_k_weights) at the fused experts' own entry, independently of the router hook."""
    model = make_tiny(layout, seed=2)
    adapter = adapt(model)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    inputs: dict[int, torch.Tensor] = {}
    handles = []
    for layer in adapter.moe_layers:
        def experts_hook(_m, args, _kwargs, index=layer.index):
            seen[index] = (args[1], args[2])

        def block_hook(_m, args, index=layer.index):
            inputs[index] = args[0]

        handles.append(layer.mlp.experts.module.register_forward_pre_hook(experts_hook, with_kwargs=True))
        handles.append(layer.mlp.module.register_forward_pre_hook(block_hook))
    with torch.no_grad():
        model(input_ids=torch.randint(0, 96, (2, 9)))
    for handle in handles:
        handle.remove()
    for layer in adapter.moe_layers:
        ids, coeffs = layer.mlp.router.route(inputs[layer.index])
        torch.testing.assert_close(ids, seen[layer.index][0], rtol=0, atol=0)
        torch.testing.assert_close(coeffs, seen[layer.index][1], rtol=0, atol=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_capture_routing_and_counts(make_tiny, layout):
    adapter = adapt(make_tiny(layout))
    ids = torch.randint(0, 96, (2, 6))
    with capture_routing(adapter) as records:
        with torch.no_grad():
            adapter.model(input_ids=ids)
    assert set(records) == {layer.index for layer in adapter.moe_layers}
    counts = expert_counts(adapter, ids)
    assert counts.shape == (len(adapter.moe_layers), adapter.num_experts)
    assert torch.all(counts.sum(dim=1) == ids.numel() * adapter.top_k)
    mask = torch.ones_like(ids)
    mask[:, -2:] = 0
    assert torch.all(expert_counts(adapter, ids, mask).sum(dim=1) == int(mask.sum()) * adapter.top_k)


@pytest.mark.parametrize("layout", ["mixtral", "qwen2_moe", "deepseek_v3", "deepseek_remote"])
def test_expert_view_write_survives_save_and_reload(make_tiny, layout, tmp_path):
    from moequant.loading import load_model

    model = make_tiny(layout, seed=3)
    bank = adapt(model).moe_layers[-1].mlp.experts
    marks = {}
    for proj in ("gate", "up", "down"):
        view = bank.weight(proj, 1)
        marks[proj] = torch.arange(view.numel(), dtype=view.dtype).reshape(view.shape) / 7.0
        view.copy_(marks[proj])
    stacked = bank.weights("up")
    stacked[2] = -1.5
    bank.write("up", stacked)
    model.save_pretrained(tmp_path / "saved")
    reloaded = adapt(load_model(str(tmp_path / "saved"), trust_remote_code=layout == "deepseek_remote"))
    again = reloaded.moe_layers[-1].mlp.experts
    for proj, mark in marks.items():
        torch.testing.assert_close(again.weight(proj, 1), mark, rtol=0, atol=0)
    assert torch.all(again.weight("up", 2) == -1.5)
    assert torch.equal(again.weight("gate", 0), bank.weight("gate", 0))


def test_fused_views_share_storage_with_the_model(make_tiny):
    bank = adapt(make_tiny("mixtral")).moe_layers[0].mlp.experts
    before = sum(p.numel() for p in bank.parameters())
    bank.weight("down", 0).mul_(0)
    assert torch.all(bank.module.down_proj[0] == 0)
    assert bank.weights("gate").data_ptr() == bank.module.gate_up_proj.data_ptr()
    assert before == sum(p.numel() for p in bank.parameters())


def test_routing_does_not_run_the_shared_experts_and_restores_them(make_tiny):
    """Qwen-MoE runs its shared expert before the router; routing alone must not pay for it."""
    adapter = adapt(make_tiny("qwen2_moe", seed=3))
    mlp = adapter.moe_layers[0].mlp
    shared = mlp.router.bypass
    assert shared, "qwen2_moe's shared expert is bypassed while routing"
    calls = []
    handle = mlp.shared_experts[0].down.register_forward_hook(lambda *_: calls.append(1))
    own = shared[0].forward
    wrapper = shared[0].forward = lambda x: own(x)  # an instance-level forward, as an offloading hook installs
    try:
        x = torch.randn(5, adapter.embed_tokens.embedding_dim)
        with torch.no_grad():
            mlp.router.route(x)
            assert not calls
            mlp.module(x[None])
        assert calls, "the block's own forward still runs its shared expert"
        assert shared[0].__dict__["forward"] is wrapper
    finally:
        handle.remove()
        del shared[0].forward
