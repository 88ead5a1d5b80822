import pytest
import torch

from moequant.errors import UsageError
from moequant.models import MoEBlock, adapt
from moequant.models.routing import capture_routing
from moequant.quant.driver import stream_quantize
from moequant.quant.hessian import HessianStack
from moequant.quant.registry import configure, get
from moequant.quant.rtn import rtn_quantize
from moequant.quant.sequential import GPTQLayer
from tests.quant.helpers import calib_ids, mean_kl


def run_observed(model, calib, config, agq):
    seen = {}

    def observe(ctx, targets, hessian):
        seen[(ctx.layer.index, tuple(t.module for t in targets))] = hessian.H.clone().double()

    result = stream_quantize(model, calib, config, GPTQLayer(agq, observe))
    return result, seen


def moe_inputs(model, calib):
    """MoE-block inputs [T, H] and the routing the forward applied, per MoE layer, from an ordinary forward."""
    adapter = adapt(model)
    captured, handles = {}, []
    for layer in adapter.moe_layers:

        def hook(_m, args, index=layer.index):
            captured[index] = args[0].reshape(-1, args[0].shape[-1]).double()

        handles.append(layer.mlp.module.register_forward_pre_hook(hook))
    with torch.no_grad(), capture_routing(adapter) as routes:
        model(calib, use_cache=False)
    for handle in handles:
        handle.remove()
    return adapter, captured, {i: (torch.cat([r[0] for r in v]), torch.cat([r[1] for r in v])) for i, v in routes.items()}


@pytest.mark.parametrize("layout", ["mixtral", "qwen2_moe", "deepseek_remote"])
@pytest.mark.parametrize("agq", [True, False])
def test_expert_hessians_are_the_explicit_weighted_sums(make_tiny, layout, agq):
    model = make_tiny(layout)
    calib = calib_ids(6, 16)
    _, seen = run_observed(model, calib, configure("agq" if agq else "gptq", wbits=4, batch_size=4), agq)
    adapter, inputs, routes = moe_inputs(model, calib)
    for layer in adapter.moe_layers:
        x, (ids, coeffs) = inputs[layer.index], routes[layer.index]
        bank = layer.mlp.experts
        for e in range(bank.num_experts):
            token, slot = torch.where(ids == e)
            c = coeffs[token, slot].double() if agq else torch.ones(len(token), dtype=torch.float64)
            xe = x[token]
            h_in = (xe * c[:, None]).t() @ xe
            gate, up, down = (bank.weight(p, e).double() for p in ("gate", "up", "down"))
            mid = bank.act_fn(xe @ gate.t()) * (xe @ up.t())
            h_mid = (mid * c[:, None]).t() @ mid
            observed_in = seen[(layer.index, ("experts.gate", "experts.up"))][e]
            observed_mid = seen[(layer.index, ("experts.down",))][e]
            torch.testing.assert_close(observed_in, h_in, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(observed_mid, h_mid, rtol=1e-3, atol=1e-3)
        for shared in layer.mlp.shared_experts:
            c = layer.mlp.shared_coefficient(x.float()).double().reshape(-1) if agq else torch.ones(x.shape[0]).double()
            names = adapter.layers[layer.index].named_linears()
            gate_name = next(n for n, m in names.items() if m is shared.gate)
            up_name = next(n for n, m in names.items() if m is shared.up)
            torch.testing.assert_close(
                seen[(layer.index, (gate_name, up_name))][0], (x * c[:, None]).t() @ x, rtol=1e-4, atol=1e-4
            )


def test_agq_weight_options_per_projection(make_tiny):
    model = make_tiny("mixtral")
    calib = calib_ids(4, 16)
    config = configure("agq", wbits=4, agq_weight="c2", agq_projections=("up", "down"))
    _, seen = run_observed(model, calib, config, agq=True)
    adapter, inputs, routes = moe_inputs(model, calib)
    layer = adapter.moe_layers[0]
    ids, coeffs = routes[layer.index]
    token, slot = torch.where(ids == 1)
    x, c = inputs[layer.index][token], coeffs[token, slot].double()
    torch.testing.assert_close(seen[(layer.index, ("experts.gate",))][1], x.t() @ x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen[(layer.index, ("experts.up",))][1], (x * c[:, None] ** 2).t() @ x, rtol=1e-4, atol=1e-4)


def test_zero_token_expert_is_quantized_with_rtn_and_flagged(make_tiny):
    model = make_tiny("deepseek_v3")
    adapter = adapt(model)
    originals = {}
    for layer in adapter.moe_layers:
        layer.mlp.router.module.e_score_correction_bias[3] = -1e4
        originals[layer.index] = layer.mlp.experts.weights("gate")[3].clone()
    config = configure("agq", wbits=3, batch_size=4)
    result = get("agq").quantize(model, calib_ids(4, 16), config)
    starved = [r for r in result.rows if r.fallback]
    assert starved and all(r.expert == 3 and r.tokens == 0 and r.fallback == "starved" for r in starved)
    assert {r.module for r in starved} == {"experts.gate", "experts.up", "experts.down"}
    for layer in adapter.moe_layers:
        weight = layer.mlp.experts.weights("gate")[3]
        assert weight.abs().sum() > 0
        expected = rtn_quantize(originals[layer.index][None], config.grid).dequantize()[0]
        assert torch.equal(weight, expected)


@pytest.mark.parametrize("layout", ["mixtral", "qwen2_moe", "deepseek_v2", "deepseek_remote"])
def test_gptq_and_agq_beat_rtn_end_to_end(make_tiny, layout):
    calib = calib_ids(8, 32)
    reference = make_tiny(layout)
    with torch.no_grad():
        fp_logits = reference(calib).logits
    kl = {}
    for algo in ("rtn", "gptq", "agq"):
        model = make_tiny(layout)
        result = get(algo).quantize(model, calib, configure(algo, wbits=3, batch_size=4))
        assert not any(r.fallback for r in result.rows)
        with torch.no_grad():
            kl[algo] = mean_kl(fp_logits, model(calib).logits)
    assert kl["gptq"] < kl["rtn"] and kl["agq"] < kl["rtn"], kl


def test_router_can_stay_in_floating_point(make_tiny):
    model = make_tiny("qwen2_moe")
    adapter = adapt(model)
    router = adapter.moe_layers[0].mlp.router.linear_weight.detach().clone()
    shared_gate = adapter.moe_layers[0].mlp.shared_gate.weight.detach().clone()
    result = get("gptq").quantize(model, calib_ids(4, 16), configure("gptq", wbits=4, quantize_router=False))
    assert torch.equal(adapter.moe_layers[0].mlp.router.linear_weight, router)
    assert torch.equal(adapter.moe_layers[0].mlp.shared_gate.weight, shared_gate)
    assert not any("router" in address for address in result.weights)


def test_every_decoder_linear_is_quantized_and_lm_head_is_not(make_tiny):
    model = make_tiny("deepseek_v3")
    adapter = adapt(model)
    head = adapter.lm_head.weight.detach().clone()
    result = get("gptq").quantize(model, calib_ids(4, 16), configure("gptq", wbits=4))
    assert torch.equal(adapter.lm_head.weight, head)
    linears = {f"layers.{layer.index}.{name}" for layer in adapter.layers for name in layer.named_linears()}
    assert linears <= set(result.weights)
    for layer in adapter.moe_layers:
        assert {f"layers.{layer.index}.experts.{p}" for p in ("gate", "up", "down")} <= set(result.weights)
        assert f"layers.{layer.index}.router" in result.weights


def test_non_finite_activations_name_layer_and_module(make_tiny):
    model = make_tiny("mixtral")
    calib = calib_ids(4, 16)
    with torch.no_grad():
        adapt(model).embed_tokens.weight[int(calib[0, 3])] = float("nan")
    with pytest.raises(UsageError, match=r"layer 0 module self_attn\.q_proj: .*NaN/Inf"):
        get("gptq").quantize(model, calib, configure("gptq", wbits=4))


def test_non_finite_hessian_names_where():
    stack = HessianStack(2, 3, torch.float32, torch.device("cpu"))
    stack.add(1, torch.full((2, 3), 1e30))
    with pytest.raises(UsageError, match="layer 4 module experts.down: the Hessian holds NaN/Inf"):
        stack.check_finite("layer 4 module experts.down")


def test_groupsize_must_divide_in_features(make_tiny):
    with pytest.raises(UsageError, match=r"groupsize 5 does not divide the 32 input features of layers\.0\."):
        get("rtn").quantize(make_tiny("mixtral"), None, configure("rtn", wbits=4, groupsize=5))


def test_layer_outputs_stream_without_moving_the_model(make_tiny):
    model = make_tiny("olmoe")
    before = {name: p.device for name, p in model.named_parameters()}
    get("gptq").quantize(model, calib_ids(4, 16), configure("gptq", wbits=4, device="cpu"))
    assert {name: p.device for name, p in model.named_parameters()} == before


def test_moe_block_type_is_what_the_stages_expect(make_tiny):
    assert isinstance(adapt(make_tiny("deepseek_remote")).moe_layers[0].mlp, MoEBlock)


def test_all_experts_feeds_every_token_to_every_expert_hessian(make_tiny):
    """The peers' remedy for starved experts: even an expert the router never picks gets a full Hessian."""
    model = make_tiny("deepseek_v3")
    adapter = adapt(model)
    for layer in adapter.moe_layers:
        layer.mlp.router.module.e_score_correction_bias[3] = -1e4
    calib = calib_ids(4, 16)
    result = get("agq").quantize(model, calib, configure("agq", wbits=3, batch_size=4, all_experts=True))
    expert_rows = [r for r in result.rows if r.expert is not None]
    assert expert_rows and not any(r.fallback for r in expert_rows)
    assert {r.tokens for r in expert_rows} == {calib.numel()}
    with capture_routing(adapter) as records, torch.no_grad():
        routed_logits = model(calib).logits
    assert torch.isfinite(routed_logits).all()
    assert all(3 not in ids for layer in records.values() for ids, _ in layer), "outputs must stay routed"


def test_all_experts_coefficients_keep_routed_ones_and_use_router_probabilities_elsewhere(make_tiny):
    from moequant.quant.sequential import all_experts_routing

    block = adapt(make_tiny("mixtral")).moe_layers[0].mlp
    x = torch.randn(6, block.experts.hidden_size)
    ids, coeffs, scores = block.router.route_with_scores(x)
    every, dense = all_experts_routing(block, x)
    assert every.shape == dense.shape == (6, block.experts.num_experts)
    torch.testing.assert_close(dense.gather(1, ids), coeffs.float())
    unrouted = torch.ones_like(dense, dtype=torch.bool).scatter_(1, ids, False)
    torch.testing.assert_close(dense[unrouted], torch.softmax(scores.float(), -1)[unrouted])


def test_all_experts_refuses_a_router_without_raw_scores(make_tiny):
    model = make_tiny("deepseek_remote")
    with pytest.raises(UsageError, match="raw scores"):
        get("gptq").quantize(model, calib_ids(2, 8), configure("gptq", wbits=4, batch_size=2, all_experts=True))
