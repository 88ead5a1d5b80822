import pytest
import torch

from moequant.quant.gptq import gptq_solve, rtn_codes
from moequant.quant.grid import GridSpec, dequantize, fit_grid


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


def reference_column_loop(W, U, spec, blocksize):
    """GPTQ's column loop as Frantar et al. write it: row-major, one gather per column, no act-order."""
    members, rows, cols = W.shape
    group = spec.group_of(cols)
    scale, zero = fit_grid(W, spec)
    W, codes = W.clone(), torch.zeros_like(W)
    losses = torch.zeros(members, rows, dtype=W.dtype)
    if group < cols:
        blocksize = group * max(1, blocksize // group)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Err1, Hinv1 = W[:, :, i1:i2].clone(), torch.zeros(members, rows, i2 - i1, dtype=W.dtype), U[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if group < cols and col % group == 0:
                s, z = fit_grid(W1[:, :, i : i + group], spec)
                scale[:, :, col // group], zero[:, :, col // group] = s[..., 0], z[..., 0]
            s_col, z_col = scale[:, :, col // group], zero[:, :, col // group]
            w = W1[:, :, i]
            code = torch.clamp(torch.round(w / s_col) + z_col, 0, spec.maxq)
            q = s_col * (code - z_col)
            codes[:, :, col] = code
            d = Hinv1[:, i, i][:, None]
            losses += (w - q) ** 2 / d**2 / 2
            Err1[:, :, i] = (w - q) / d
            W1[:, :, i:] -= Err1[:, :, i, None] * Hinv1[:, None, i, i:]
        W[:, :, i2:] -= Err1 @ U[:, i1:i2, i2:]
    return codes, scale, zero, losses


def reference_upper_factor(H, damp):
    """U with Uᵀ·U = (H + damp·mean(diag H)·I)⁻¹, as GPTQ computes it (no failures expected here)."""
    eye = torch.eye(H.shape[-1], dtype=H.dtype)
    damped = H + (damp * H.diagonal(dim1=-2, dim2=-1).mean(-1))[:, None, None] * eye
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True).contiguous()


@pytest.mark.parametrize(
    "spec, dtype, blocksize",
    [
        (GridSpec(4), torch.float32, 128),
        (GridSpec(3, groupsize=16), torch.float32, 32),
        (GridSpec(4, sym=False, groupsize=32, scale_dtype="bfloat16"), torch.float64, 40),
        (GridSpec(2), torch.float64, 7),
    ],
    ids=["w4-f32", "w3-g16-f32", "w4-asym-g32-bf16-f64", "w2-f64-odd-blocks"],
)
def test_column_major_loop_gives_the_reference_codes_bit_for_bit(spec, dtype, blocksize):
    W, _, H = correlated_problem(members=3, rows=20, cols=96, seed=1)
    W, H = W.to(dtype), H.to(dtype)
    result = gptq_solve(W, H, spec, blocksize=blocksize)
    codes, scale, zero, losses = reference_column_loop(W, reference_upper_factor(H, 0.01), spec, blocksize)
    assert torch.equal(result.weight.codes, codes.to(torch.uint8))
    assert torch.equal(result.weight.scale, scale) and torch.equal(result.weight.zero, zero.float())
    torch.testing.assert_close(result.loss, losses.double(), rtol=1e-5, atol=0)


def test_act_order_codes_equal_solving_the_permuted_problem():
    """Act-order is the plain loop on columns sorted by diag H, with each column keeping its own group."""
    W, _, H = correlated_problem(members=2, rows=16, cols=64, seed=2)
    spec = GridSpec(3, groupsize=16)
    result = gptq_solve(W, H, spec, blocksize=32, act_order=True)
    for member in range(2):
        perm = torch.argsort(H[member].diagonal(), descending=True)
        U = reference_upper_factor(H[member][perm][:, perm][None], 0.01)
        scale, zero = fit_grid(W[member : member + 1], spec)
        w = W[member : member + 1, :, perm].clone()
        group_of_column = perm // 16
        codes = torch.zeros_like(w)
        for i1 in range(0, 64, 32):
            W1, Err1 = w[:, :, i1 : i1 + 32].clone(), torch.zeros(1, 16, 32)
            for i in range(32):
                s, z = scale[..., group_of_column[i1 + i]], zero[..., group_of_column[i1 + i]]
                code = torch.clamp(torch.round(W1[:, :, i] / s) + z, 0, spec.maxq)
                codes[:, :, i1 + i] = code
                err = (W1[:, :, i] - s * (code - z)) / U[:, i1 + i, i1 + i][:, None]
                W1[:, :, i:] -= err[:, :, None] * U[:, None, i1 + i, i1 + i : i1 + 32]
                Err1[:, :, i] = err
            w[:, :, i1 + 32 :] -= Err1 @ U[:, i1 : i1 + 32, i1 + 32 :]
        unpermuted = torch.empty_like(codes)
        unpermuted[:, :, perm] = codes
        assert torch.equal(result.weight.codes[member], unpermuted[0].to(torch.uint8))


def test_members_needing_more_damping_get_the_reference_factor_of_their_final_damping():
    """A retry re-damps only the failed members, from their undamped H (the first try's
    damping is undone on the diagonal), so every member's codes are the reference's at the
    damping it ended with."""
    W, X, H = correlated_problem(members=3, rows=8, cols=32, seed=3)
    singular = X[1, :3].transpose(0, 1) @ X[1, :3]
    H = torch.stack([H[0], singular, H[2]])
    spec = GridSpec(4)
    result = gptq_solve(W, H, spec, damp=0.0, blocksize=16)
    assert result.damp[0] == 0 and result.damp[2] == 0 and result.damp[1] > 0
    for member in range(3):
        damp = float(result.damp[member])
        U = reference_upper_factor(H[member : member + 1], damp)
        codes, _, _, _ = reference_column_loop(W[member : member + 1], U, spec, 16)
        assert torch.equal(result.weight.codes[member], codes[0].to(torch.uint8))
