from __future__ import annotations

import pytest
import torch
from torch import nn

from moequant.errors import UsageError
from moequant.models import adapt
from moequant.models.routing import capture_routing
from moequant.models.synthetic import tiny_any_model, tiny_model
from moequant.rotation import RotationConfig, check_norms, expert_outlier_ratios, install_online_hadamard, rotate_model
from moequant.rotation.fuse import norm_readers
from moequant.rotation.online import fold_online_hadamard
from moequant.rotation.rotate import ResidualRotation, residual_writers
from tests.conftest import LAYOUTS
from tests.rotation.conftest import norms_in_input_dtype

FLOAT32_ROUTERS = ("deepseek_v2", "deepseek_v3")
"""transformers computes these routers (and V2's rotary embedding) in float32 whatever the model dtype."""


def _run(model: nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    adapter = adapt(model)
    with torch.no_grad(), capture_routing(adapter) as records:
        logits = model(input_ids=input_ids, use_cache=False).logits
    ids = [torch.cat([r[0] for r in records[layer.index]]).sort(dim=-1).values for layer in adapter.moe_layers]
    return logits, ids


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _f64(make_tiny, layout: str) -> nn.Module:
    model = make_tiny(layout, seed=1, dtype=torch.float64)
    if layout != "deepseek_remote":
        model.set_experts_implementation("eager")
    return model


def _assert_rounded_once(weight: torch.Tensor, exact: torch.Tensor) -> None:
    """`weight` is the float64 result rounded once to its own dtype (float32-kept routers included)."""
    if weight.dtype == torch.float64:
        assert torch.allclose(weight, exact, atol=1e-12)
    else:
        assert torch.allclose(weight.double(), exact.to(weight.dtype).double(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["mixtral", "qwen2_moe", "deepseek_v3"])
def test_half_precision_keeps_every_dtype_and_function(make_tiny, layout: str, dtype: torch.dtype, input_ids) -> None:
    """Each tensor is written back in its own dtype, and the rotated bf16/fp16 model computes
    what the unrotated one does up to that dtype's rounding."""
    model = make_tiny(layout, seed=1, dtype=dtype)
    dtypes = {name: t.dtype for name, t in model.state_dict().items()}
    reference = make_tiny(layout, seed=1, dtype=torch.float64)
    reference.set_experts_implementation("eager")
    reference.load_state_dict({name: t.double() for name, t in model.state_dict().items()})
    if layout in FLOAT32_ROUTERS:
        assert torch.float32 in set(dtypes.values())
    before = reference(input_ids=input_ids, use_cache=False).logits.detach()
    rotate_model(model, RotationConfig(seed=4))
    assert {name: t.dtype for name, t in model.state_dict().items()} == dtypes
    with torch.no_grad():
        after = model(input_ids=input_ids, use_cache=False).logits.double()
    assert _rel_err(after, before) <= (0.1 if dtype == torch.bfloat16 else 0.02)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_same_logits_and_routing(make_tiny, layout: str, input_ids: torch.Tensor) -> None:
    model = make_tiny(layout, seed=1)
    before, routes_before = _run(model, input_ids)
    report = rotate_model(model, RotationConfig(seed=3))
    after, routes_after = _run(model, input_ids)
    assert _rel_err(after, before) <= 1e-4
    assert all(torch.equal(a, b) for a, b in zip(routes_before, routes_after))
    assert report["norms_fused"] == 2 * len(adapt(model).layers) + 1
    for group in norm_readers(adapt(model)):
        assert torch.equal(group.norm.weight, torch.ones_like(group.norm.weight))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float64_same_logits(make_tiny, layout: str, input_ids: torch.Tensor) -> None:
    model = norms_in_input_dtype(_f64(make_tiny, layout))
    before, routes_before = _run(model, input_ids)
    rotate_model(model, RotationConfig(seed=5))
    after, routes_after = _run(model, input_ids)
    assert _rel_err(after, before) <= (1e-6 if layout in FLOAT32_ROUTERS else 1e-9)
    assert all(torch.equal(a, b) for a, b in zip(routes_before, routes_after))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_weight_is_exactly_its_rotation(make_tiny, layout: str) -> None:
    """Float64 weight-level identity: readers W·diag(w)·Q, writers Qᵀ·W, E·Q, all else untouched."""
    model = _f64(make_tiny, layout)
    adapter = adapt(model)
    expected_readers = [
        [w.clone() * g.norm.weight.detach().clone() for w in g.readers] for g in norm_readers(adapter)
    ]
    writers = [w.weight.data.clone() if isinstance(w, nn.Linear) else w.clone() for w in residual_writers(adapter)]
    embed = adapter.embed_tokens.weight.detach().clone()
    everything = dict(model.named_parameters()) | dict(model.named_buffers())
    snapshot = {name: tensor.detach().clone() for name, tensor in everything.items()}

    rotate_model(model, RotationConfig(seed=9))
    q = ResidualRotation(embed.shape[1], 9).matrix()
    assert torch.allclose(q @ q.T, torch.eye(q.shape[0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(adapter.embed_tokens.weight, embed @ q, atol=1e-12)
    for group, expected in zip(norm_readers(adapter), expected_readers):
        for weight, want in zip(group.readers, expected):
            _assert_rounded_once(weight, want.double() @ q)
    after_writers = [w.weight.data if isinstance(w, nn.Linear) else w for w in residual_writers(adapter)]
    for weight, want in zip(after_writers, writers):
        _assert_rounded_once(weight, q.T @ want.double())
    rotated = [adapter.embed_tokens.weight, *after_writers]
    rotated += [t for g in norm_readers(adapter) for t in (*g.readers, g.norm.weight)]
    rotated_storage = {t.untyped_storage().data_ptr() for t in rotated}
    for name, tensor in everything.items():
        if tensor.untyped_storage().data_ptr() not in rotated_storage:
            assert torch.equal(tensor, snapshot[name]), f"{name} changed but is not on the residual stream"


def test_tied_embeddings_are_untied(input_ids: torch.Tensor) -> None:
    model = tiny_model("qwen3_moe", seed=2, tie_word_embeddings=True)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    before, _ = _run(model, input_ids)
    report = rotate_model(model)
    after, _ = _run(model, input_ids)
    assert report["untied_lm_head"] and not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert _rel_err(after, before) <= 1e-4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_online_hadamard_keeps_the_function_only_with_its_runtime_half(
    make_tiny, layout: str, input_ids: torch.Tensor
) -> None:
    model = make_tiny(layout, seed=1)
    before, routes_before = _run(model, input_ids)
    rotate_model(model, RotationConfig(seed=3))
    adapter = adapt(model)
    fold_online_hadamard(adapter)
    broken, _ = _run(model, input_ids)
    assert _rel_err(broken, before) > 1e-2
    online = install_online_hadamard(adapter, "torch")
    after, routes_after = _run(model, input_ids)
    assert _rel_err(after, before) <= 1e-4 and online.used == {"torch"}
    assert all(torch.equal(a, b) for a, b in zip(routes_before, routes_after))
    online.remove()
    removed, _ = _run(model, input_ids)
    assert torch.allclose(removed, broken)


def test_a_layernorm_among_rms_norms_is_rejected_before_any_change() -> None:
    """Centring the stream for one LayerNorm would change what the RMS norms see: refused."""
    model = tiny_model("mixtral", seed=1)
    layer = adapt(model).layers[1]
    name = next(n for n, child in layer.module.named_children() if child is layer.post_attention_norm)
    setattr(layer.module, name, nn.LayerNorm(32))
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(UsageError) as err:
        rotate_model(model)
    message = str(err.value)
    assert "LayerNorm" in message and "layer 1 post-attention norm" in message and "\n" not in message
    assert all(torch.equal(p, snapshot[n]) for n, p in model.named_parameters())


def _layernorms_in_float64(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.double()
    return model


def test_a_layernorm_model_rotates_exactly_with_a_centred_stream(input_ids: torch.Tensor) -> None:
    """PhiMoE: LayerNorms with bias. The stream is centred, Q keeps the ones direction, biases stay in the norms."""
    model = _layernorms_in_float64(tiny_any_model("phimoe", seed=1, dtype=torch.float64))
    model.set_experts_implementation("eager")
    adapter = adapt(model)
    assert all(bool(g.norm.bias.abs().min() > 0) for g in norm_readers(adapter)), "non-trivial biases"
    before, routes_before = _run(model, input_ids)
    report = rotate_model(model, RotationConfig(seed=4))
    after, routes_after = _run(model, input_ids)
    assert report["residual_centred"] is True
    assert _rel_err(after, before) <= 1e-10
    assert all(torch.equal(a, b) for a, b in zip(routes_before, routes_after))
    assert adapter.embed_tokens.weight.mean(-1).abs().max() < 1e-12, "embeddings are mean-free"
    for writer in residual_writers(adapter):
        weight = writer.weight if isinstance(writer, nn.Linear) else writer
        assert weight.mean(0).abs().max() < 1e-12, "every writer adds mean-free vectors"
    q = ResidualRotation(adapter.embed_tokens.weight.shape[1], 4, centred=True).matrix()
    ones = torch.ones(1, q.shape[0], dtype=torch.float64)
    assert torch.allclose(q @ q.T, torch.eye(q.shape[0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ones @ q, ones, atol=1e-12)
    assert (q.abs().max() * q.shape[0] ** 0.5).item() < 3.0, "Q stays incoherent: no channel kept whole"
    for group in norm_readers(adapter):
        assert torch.equal(group.norm.weight, torch.ones_like(group.norm.weight))


def test_a_layernorm_with_zero_gain_and_a_bias_is_refused() -> None:
    model = tiny_any_model("phimoe", seed=1)
    norm = adapt(model).final_norm
    with torch.no_grad():
        norm.weight[3] = 0.0
    with pytest.raises(UsageError, match="final norm has gain 0 and a non-zero bias in channel 3"):
        rotate_model(model)


class _OnePlusWeightNorm(nn.Module):
    """Gemma-style (1 + weight) gain: parameter layout of RMSNorm, gain stored minus one."""

    def __init__(self, size: int, power: int = 1) -> None:
        super().__init__()
        self.power = power
        self.weight = nn.Parameter(torch.linspace(-0.4, 0.6, size, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1 + self.weight) ** self.power * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def _with_final_norm(norm: nn.Module) -> nn.Module:
    model = tiny_model("olmoe", seed=1, dtype=torch.float64)
    model.set_experts_implementation("eager")  # the grouped kernels take no float64
    parent = model.model
    name = next(n for n, child in parent.named_children() if child is adapt(model).final_norm)
    setattr(parent, name, norm)
    return model


def test_a_one_plus_weight_norm_is_folded_exactly(input_ids: torch.Tensor) -> None:
    model = norms_in_input_dtype(_with_final_norm(_OnePlusWeightNorm(32)))
    with torch.no_grad():
        before = model(input_ids=input_ids, use_cache=False).logits
        rotate_model(model)
        after = model(input_ids=input_ids, use_cache=False).logits
    assert _rel_err(after, before) <= 1e-9
    assert torch.equal(adapt(model).final_norm.weight, torch.zeros(32, dtype=torch.float64)), "gain 1 in its own form"


def test_norm_with_rmsnorm_parameters_but_other_function_is_rejected() -> None:
    model = _with_final_norm(_OnePlusWeightNorm(32, power=2))
    with pytest.raises(UsageError, match="_OnePlusWeightNorm \\(final norm\\) computes none of weight"):
        check_norms(adapt(model))


def test_unsupported_hidden_size_fails_before_any_change() -> None:
    model = tiny_model("mixtral", seed=1, hidden_size=188)
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(UsageError, match="size 188"):
        rotate_model(model)
    assert all(torch.equal(p, snapshot[n]) for n, p in model.named_parameters())


def test_rotation_flattens_a_planted_outlier_channel(input_ids: torch.Tensor) -> None:
    model = tiny_model("mixtral", seed=1)
    adapter = adapt(model)
    for layer in adapter.moe_layers:
        for expert in range(layer.mlp.experts.num_experts):
            layer.mlp.experts.weight("gate", expert)[:, 5] *= 20.0
    before = expert_outlier_ratios(adapter)
    rotate_model(model)
    after = expert_outlier_ratios(adapt(model))
    assert after["gate"]["max"] < 0.5 * before["gate"]["max"]


def test_config_rejects_bad_values() -> None:
    with pytest.raises(UsageError, match="seed"):
        RotationConfig(seed=-1)
    with pytest.raises(UsageError, match="backend"):
        RotationConfig(backend="cuda")
    with pytest.raises(UsageError, match="online_hadamard"):
        RotationConfig(online_hadamard="yes")  # type: ignore[arg-type]
