import json

import pytest
import torch

from moequant.cli import main

from moequant.errors import UsageError
from moequant.models import adapt
from moequant.loading import load_model
from moequant.models.routing import capture_routing
from moequant.quant.awq import AWQLayer
from moequant.quant.awq_search import AWQConfig
from moequant.quant.checkpoint import save_quantized
from moequant.quant.driver import stream_quantize
from moequant.quant.registry import configure, get
from tests.conftest import LAYOUTS
from tests.quant.helpers import calib_ids, write_calib

FOLD = {"awq_alpha": 0.5}
"""A fixed α = 0.5 makes every scale non-trivial, so folding is exercised everywhere."""


def float64(make_tiny, layout: str, seed: int = 0):
    model = make_tiny(layout, seed=seed, dtype=torch.float64)
    if layout != "deepseek_remote":
        model.set_experts_implementation("eager")
    return model


def logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def fold_only(model, calib, weighted: bool = False) -> None:
    config = configure("agq_awq" if weighted else "awq", wbits=4, batch_size=4, **FOLD)
    stream_quantize(model, calib, config, AWQLayer(weighted, apply_quantization=False))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_folding_scales_keeps_fp_logits(make_tiny, layout):
    model = float64(make_tiny, layout)
    calib = calib_ids(4, 16)
    adapter = adapt(model)
    norms = [(layer.input_norm.weight.clone(), layer.post_attention_norm.weight.clone()) for layer in adapter.layers]
    values = [layer.attention.value.weight.clone() for layer in adapter.layers if layer.attention.value is not None]
    before = logits(model, calib)
    fold_only(model, calib, weighted=True)
    assert relative(logits(model, calib), before) <= 1e-5
    for layer, (input_norm, post_norm) in zip(adapter.layers, norms):
        assert not torch.allclose(layer.input_norm.weight, input_norm)
        assert not torch.allclose(layer.post_attention_norm.weight, post_norm)
    assert values, "every family exposes the linear producing V"
    changed = [layer.attention.value.weight for layer in adapter.layers if layer.attention.value is not None]
    assert all(not torch.allclose(a, b) for a, b in zip(changed, values))


@pytest.mark.parametrize("layout", ["mixtral", "qwen2_moe"])
def test_folding_on_a_rotated_model(make_tiny, layout):
    from moequant.rotation import RotationConfig, rotate_model

    model = float64(make_tiny, layout)
    calib = calib_ids(4, 16)
    rotate_model(model, RotationConfig(seed=1))
    before = logits(model, calib)
    fold_only(model, calib)
    assert relative(logits(model, calib), before) <= 1e-5


def layer0_error(model, reference_out, calib) -> float:
    with torch.no_grad():
        out = model(calib, output_hidden_states=True, use_cache=False).hidden_states[1]
    return float((out - reference_out).double().square().sum())


@pytest.mark.parametrize("layout", ["mixtral", "qwen2_moe", "deepseek_remote"])
def test_awq_layer_output_error_is_at_most_rtns(make_tiny, layout):
    calib = calib_ids(8, 16)
    with torch.no_grad():
        reference = make_tiny(layout)(calib, output_hidden_states=True, use_cache=False).hidden_states[1]
    errors = {}
    for algo in ("rtn", "awq", "agq_awq"):
        model = make_tiny(layout)
        get(algo).quantize(model, calib, configure(algo, wbits=3, batch_size=4))
        errors[algo] = layer0_error(model, reference, calib)
    assert errors["awq"] <= errors["rtn"], errors
    assert errors["agq_awq"] <= errors["rtn"], errors


def quantized_state(layout, make_tiny, algo, calib, prepare=None):
    model = make_tiny(layout)
    if prepare is not None:
        prepare(model)
    result = get(algo).quantize(model, calib, configure(algo, wbits=3, batch_size=4))
    return {k: v.clone() for k, v in model.state_dict().items()}, result


def test_agq_awq_differs_from_awq_with_uneven_coefficients(make_tiny):
    calib = calib_ids(8, 16)
    awq, _ = quantized_state("qwen2_moe", make_tiny, "awq", calib)
    agq, _ = quantized_state("qwen2_moe", make_tiny, "agq_awq", calib)
    differing = [name for name in awq if not torch.equal(awq[name], agq[name])]
    assert any("experts" in name for name in differing), differing


def uniform_router(model) -> None:
    """A zero router: softmax gives 1/E to every expert, top-2 renormalised gives exactly 1/2 each."""
    for layer in adapt(model).moe_layers:
        layer.mlp.router.linear_weight.data.zero_()


def test_agq_awq_equals_awq_with_uniform_coefficients(make_tiny):
    calib = calib_ids(8, 16)
    probe = make_tiny("mixtral")
    uniform_router(probe)
    with torch.no_grad(), capture_routing(adapt(probe)) as routes:
        probe(calib, use_cache=False)
    coefficients = torch.cat([c for records in routes.values() for _, c in records])
    assert torch.equal(coefficients, torch.full_like(coefficients, 0.5))
    awq, awq_result = quantized_state("mixtral", make_tiny, "awq", calib, uniform_router)
    agq, agq_result = quantized_state("mixtral", make_tiny, "agq_awq", calib, uniform_router)
    assert all(torch.equal(awq[name], agq[name]) for name in awq)
    assert len(awq_result.rows) == len(agq_result.rows)
    for a, b in zip(awq_result.rows, agq_result.rows):
        assert (a.module, a.expert, a.tokens, a.fallback) == (b.module, b.expert, b.tokens, b.fallback)
        factor = 0.5 if a.module.startswith("experts.") else 1.0
        assert (a.loss != a.loss and b.loss != b.loss) or b.loss == factor * a.loss, (a, b)


def test_starved_expert_falls_back_to_rtn_and_is_reported(make_tiny):
    model = make_tiny("deepseek_v3")
    adapter = adapt(model)
    for layer in adapter.moe_layers:
        layer.mlp.router.module.e_score_correction_bias[3] = -1e4
    result = get("awq").quantize(model, calib_ids(4, 16), configure("awq", wbits=3, batch_size=4))
    starved = [r for r in result.rows if r.fallback]
    assert starved and all(r.expert == 3 and r.tokens == 0 and r.fallback == "starved" for r in starved)
    assert {r.module for r in starved} == {"experts.gate", "experts.up", "experts.down"}
    for layer in adapter.moe_layers:
        assert layer.mlp.experts.weights("down")[3].abs().sum() > 0


@pytest.mark.parametrize("layout", ["qwen2_moe", "deepseek_remote"])
def test_checkpoint_loads_back_to_the_quantized_model(tmp_path, make_tiny, layout):
    calib = calib_ids(4, 16)
    model = make_tiny(layout)
    config = configure("agq_awq", wbits=3, batch_size=4)
    result = get("agq_awq").quantize(model, calib, config)
    out = save_quantized(tmp_path / "ckpt", model, result, {"method": "agq_awq", "config": config.to_dict()})
    loaded = load_model(str(out))
    torch.testing.assert_close(logits(loaded, calib), logits(model, calib), rtol=0, atol=1e-6)
    addresses = set(result.weights)
    assert any(a.endswith("experts.down") for a in addresses) and any(a.endswith("router") for a in addresses)


def test_alpha_grid_includes_both_ends():
    assert AWQConfig().alphas()[0] == 0.0 and AWQConfig().alphas()[-1] == 1.0
    assert len(AWQConfig(awq_n_grid=5).alphas()) == 5 and AWQConfig(awq_alpha=0.3).alphas() == [0.3]


def run_cli(capsys, *argv):
    capsys.readouterr()
    code = main(["quantize", *map(str, argv)])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("algo", ["awq", "agq_awq"])
def test_cli_without_calibration_is_one_line_exit_2(tmp_path, model_dir, capsys, algo):
    code, err = run_cli(capsys, "--model", model_dir("mixtral"), "--algo", algo, "--wbits", 3, "--out", tmp_path / "out")
    assert code == 2 and f"--algo {algo} needs calibration data" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_writes_an_awq_checkpoint(tmp_path, model_dir, tokenizer, capsys):
    calib = write_calib(tmp_path / "calib.jsonl", tokenizer, nsamples=4, seqlen=16)
    out = tmp_path / "awq-w4"
    code, err = run_cli(capsys, "--model", model_dir("deepseek_v3"), "--algo", "awq", "--wbits", 4,
                        "--calib", calib, "--device", "cpu", "--awq-n-grid", 5, "--awq-clip-tokens", 64, "--out", out)
    assert code == 0, err
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["method"] == "awq" and meta["config"]["algo"] == "awq"
    assert (meta["config"]["awq_n_grid"], meta["config"]["awq_clip_tokens"], meta["config"]["awq_alpha"]) == (5, 64, None)
    with torch.no_grad():
        assert torch.isfinite(load_model(str(out))(torch.tensor([[5, 6, 7]])).logits).all()


def test_scales_fold_into_a_one_plus_weight_norm_in_its_own_form() -> None:
    """Qwen3-Next stores its norm gain minus one: dividing the weight by s would not divide the gain."""
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextRMSNorm

    from moequant.quant.awq import _fold_into_norm

    norm = Qwen3NextRMSNorm(16).double()
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, 16, dtype=torch.float64))
        x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        s = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)
        expected = norm(x) / s
        _fold_into_norm(norm, s)
        assert torch.allclose(norm(x), expected, rtol=1e-5, atol=1e-6)  # the norm computes in float32
