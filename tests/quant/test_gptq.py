import pytest
import torch

from moequant.quant.gptq import gptq_solve, rtn_codes
from moequant.quant.grid import GridSpec, dequantize


def correlated_problem(members=4, rows=12, cols=48, tokens=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(members, rows, cols, generator=g)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5
    X = torch.randn(members, tokens, cols, generator=g) @ mix + 0.5 * torch.randn(cols, generator=g)
    return W, X, X.transpose(1, 2) @ X


def output_error(X, W, Q):
    return ((X @ (Q - W).transpose(1, 2)) ** 2).sum(dim=(1, 2))


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("groupsize", [-1, 16])
def test_gptq_beats_rtn_on_layer_output(act_order, groupsize):
    W, X, H = correlated_problem()
    spec = GridSpec(3, groupsize=groupsize)
    result = gptq_solve(W, H, spec, act_order=act_order, blocksize=32)
    rtn = dequantize(*rtn_codes(W, spec), spec.group_of(W.shape[-1]))
    gptq_err = output_error(X, W, result.weight.dequantize())
    assert torch.all(gptq_err < 0.8 * output_error(X, W, rtn))
    assert not result.fallback.any()
    assert torch.allclose(result.damp, torch.full_like(result.damp, 0.01))
    assert torch.all(result.loss > 0)


@pytest.mark.parametrize("act_order", [False, True])
def test_batched_solver_matches_one_expert_at_a_time(act_order):
    W, _, H = correlated_problem(members=5)
    spec = GridSpec(4, groupsize=16, sym=False)
    batched = gptq_solve(W, H, spec, act_order=act_order, blocksize=32, chunk=5)
    chunked = gptq_solve(W, H, spec, act_order=act_order, blocksize=32, chunk=2)
    for e in range(5):
        alone = gptq_solve(W[e : e + 1], H[e : e + 1], spec, act_order=act_order, blocksize=32)
        assert torch.equal(alone.weight.codes[0], batched.weight.codes[e])
        assert torch.equal(alone.weight.scale[0], batched.weight.scale[e])
    assert torch.equal(chunked.weight.codes, batched.weight.codes)


def test_starved_member_falls_back_to_rtn_not_zero():
    W, _, H = correlated_problem(members=3)
    H[1] = 0
    spec = GridSpec(3)
    result = gptq_solve(W, H, spec, starved=torch.tensor([False, True, False]))
    codes, scale, zero = rtn_codes(W[1:2], spec)
    assert result.fallback.tolist() == [False, True, False]
    assert torch.equal(result.weight.codes[1], codes[0].to(torch.uint8))
    assert result.weight.dequantize()[1].abs().sum() > 0
    assert torch.isnan(result.loss[1]).all() and not torch.isnan(result.loss[0]).any()


def test_singular_hessian_raises_damping_instead_of_failing():
    W, X, _ = correlated_problem(members=2, tokens=3)
    H = X.transpose(1, 2) @ X
    result = gptq_solve(W, H, GridSpec(3), damp=0.0)
    assert not result.fallback.any()
    assert torch.all(result.damp > 0)


def test_dead_columns_keep_their_weights():
    W, X, _ = correlated_problem(members=1)
    X[..., :4] = 0
    result = gptq_solve(W, X.transpose(1, 2) @ X, GridSpec(4))
    assert result.weight.dequantize()[0, :, :4].abs().sum() > 0
