"""The layer-streaming driver hands every layer what the model's own forward hands it."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from moequant.models import adapt
from moequant.models.synthetic import tiny_any_model
from moequant.quant.driver import LayerContext, layer_kinds, stream_quantize
from moequant.quant.registry import configure
from moequant.quant.sequential import GPTQLayer


def test_each_layer_kind_gets_its_own_mask():
    """Sliding-window and full-attention layers receive different masks; layer 0's must not be reused."""
    model = tiny_any_model("mimo_v2_flash")
    from moequant.models import adapt

    kinds = layer_kinds(adapt(model))
    assert len(set(kinds)) > 1, kinds
    ids = torch.randint(3, 96, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True, use_cache=False).hidden_states
    seen = []

    def record(ctx):
        seen.append(torch.cat(ctx.outputs()))

    stream_quantize(model, ids, configure("rtn", wbits=4, device="cpu", batch_size=2), record)
    for index, hidden in enumerate(seen[:-1]):
        torch.testing.assert_close(hidden, expected[index + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["mixtral", "qwen2_moe", "deepseek_v3", "olmoe", "deepseek_remote"])
def test_settled_token_mixer_is_replayed_exactly(make_tiny, layout):
    """After GPTQ the output pass replays the token mixer's recorded output: the same floats as recomputing it."""
    model = make_tiny(layout, seed=4)
    ids = torch.randint(3, 96, (4, 24), generator=torch.Generator().manual_seed(1))
    replays = []

    def quantize_and_compare(ctx):
        GPTQLayer(agq=True)(ctx)
        mixer = ctx.layer.attention.module
        calls = []
        reader = next(iter(ctx.layer.attention.readers.values()))
        handle = reader.register_forward_pre_hook(lambda *_: calls.append(1))
        replayed = ctx.outputs()
        replays.append(not calls and len(ctx.settled[mixer].outputs) == len(ctx.inputs))
        ctx.settled.clear()
        recomputed = ctx.outputs()
        handle.remove()
        assert all(torch.equal(a, b) for a, b in zip(replayed, recomputed))

    stream_quantize(model, ids, configure("agq", wbits=3, device="cpu", batch_size=2), quantize_and_compare)
    assert replays and all(replays), "every layer's output pass replays its token mixer"


class _CallsTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return self.inner(self.inner(x))


def test_a_module_called_twice_per_forward_is_never_replayed():
    layer = _CallsTwice()
    calls = []
    layer.inner.register_forward_pre_hook(lambda *_: calls.append(1))
    inputs = [torch.randn(2, 4), torch.randn(3, 4)]
    ctx = LayerContext(SimpleNamespace(index=0, module=layer), None, None, torch.device("cpu"), None, inputs, [{}, {}])
    ctx.settle(layer.inner)
    first, second = ctx.outputs(), ctx.outputs()
    assert len(calls) == 8 and not ctx.settled[layer.inner].replayable
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_a_replayed_module_drops_the_records_of_modules_inside_it():
    """Once the outer module replays, the inner ones are never called again: their outputs are not kept."""
    layer = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 4))
    outer, inner = layer[0], layer[0][0]
    inputs = [torch.randn(2, 4), torch.randn(3, 4)]
    ctx = LayerContext(SimpleNamespace(index=0, module=layer), None, None, torch.device("cpu"), None, inputs, [{}, {}])
    ctx.settle(inner)
    first = ctx.outputs()
    assert len(ctx.settled[inner].outputs) == 2
    ctx.settle(outer)
    second, third = ctx.outputs(), ctx.outputs()
    assert not ctx.settled[inner].outputs and len(ctx.settled[outer].outputs) == 2
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(first, second, third))


class _CallsAfterTheStop(nn.Module):
    """A layer calling one module again after the point where a stage's pass stops."""

    def __init__(self) -> None:
        super().__init__()
        self.shared, self.stop_here, self.tail = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        y = self.stop_here(self.shared(x))
        return self.tail(self.shared(y))


def test_a_module_found_called_twice_while_replaying_is_recomputed():
    layer = _CallsAfterTheStop()
    inputs = [torch.randn(2, 4), torch.randn(3, 4)]
    ctx = LayerContext(SimpleNamespace(index=0, module=layer), None, None, torch.device("cpu"), None, inputs, [{}, {}])
    expected = ctx.outputs()
    ctx.settle(layer.shared)
    list(ctx.each_batch({"stop_here": layer.stop_here}))  # records one call: the pass stops before the second
    assert len(ctx.settled[layer.shared].outputs) == 2
    assert all(torch.equal(a, b) for a, b in zip(ctx.outputs(), expected))
    assert not ctx.settled[layer.shared].replayable


def test_replaced_forwards_come_back_after_an_exception():
    from moequant.models import forwards_replaced

    module = nn.Linear(4, 4)
    with pytest.raises(RuntimeError), forwards_replaced({module: lambda x: x}):
        raise RuntimeError
    assert "forward" not in module.__dict__


@pytest.mark.parametrize("layout", ["qwen2_moe", "deepseek_v3"])
def test_replay_and_the_routing_bypass_leave_every_code(make_tiny, layout, monkeypatch):
    ids = torch.randint(3, 96, (4, 24), generator=torch.Generator().manual_seed(2))
    config = configure("agq", wbits=3, device="cpu", batch_size=2)
    fast = stream_quantize(make_tiny(layout, seed=6), ids, config, GPTQLayer(agq=True))
    monkeypatch.setattr(LayerContext, "settle", lambda self, module: None)
    model = make_tiny(layout, seed=6)
    for layer in adapt(model).moe_layers:
        assert layer.mlp.router.bypass or layout != "qwen2_moe"
        layer.mlp.router.bypass = ()
    plain = stream_quantize(model, ids, config, GPTQLayer(agq=True))
    assert fast.weights.keys() == plain.weights.keys()
    for address, weight in fast.weights.items():
        a, b = weight.unpacked(), plain.weights[address].unpacked()
        assert torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale) and torch.equal(a.zero, b.zero), address
