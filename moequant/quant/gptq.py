"""The GPTQ solver (Frantar et al.), batched over a leading member dimension.

All experts of one projection are solved together: one batched Cholesky, one batched
triangular inverse, and the column loop advances every member at once, so the Python
overhead of GPTQ's column loop is paid once per projection instead of once per expert.
Members are processed in chunks so the [chunk, in, in] factors fit a memory budget.
Rows are independent given H, so linears reading the same input (q/k/v, or gate and up)
can be stacked along `out` and solved in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moequant.quant.grid import GridSpec, QuantizedWeight, fit_grid, symmetric_zero, to_codes

CHOLESKY_ATTEMPTS = 6
CHUNK_BUDGET_BYTES = 1 << 30


@dataclass
class SolverResult:
    weight: QuantizedWeight
    loss: torch.Tensor
    damp: torch.Tensor
    fallback: torch.Tensor

    @property
    def members(self) -> int:
        return self.loss.shape[0]


def auto_chunk(rows: int, cols: int, itemsize: int, budget: int = CHUNK_BUDGET_BYTES) -> int:
    """Members per chunk so that H, its factors and the working weights fit in `budget` bytes.

    Weights count seven times: the input, its column-major working copy, the codes (column-major,
    then row-major), a block update's product and act-order's per-column scales and zeros.
    """
    per_member = (4 * cols * cols + 7 * rows * cols) * itemsize
    return max(1, budget // per_member)


def _factor(H: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of H⁻¹ with relative damping raised ×10 where H is not positive definite.

    Returns (U, damping used [B], ok [B]); members that never factor are left to the caller.
    `H` is the caller's working copy and is damped in place: the damping only touches the
    diagonal, so the common case (every member factors at once) copies no [B, n, n] tensor
    besides the factors. U is returned row-major, the layout the block updates' matmuls
    have always read (the layout decides the BLAS call, hence the rounding).
    """
    members, cols = H.shape[0], H.shape[-1]
    diagonal = H.diagonal(dim1=-2, dim2=-1)
    mean_diag = diagonal.mean(-1)
    undamped = diagonal.clone()
    H.add_(0.0)  # what adding the damping matrix does off the diagonal: −0 becomes +0
    factor = torch.full((members,), float(damp), dtype=H.dtype, device=H.device)
    ok = torch.zeros(members, dtype=torch.bool, device=H.device)
    U = None
    for _ in range(CHOLESKY_ATTEMPTS):
        index = (~ok).nonzero().squeeze(1)
        diagonal.copy_(undamped).add_((factor * mean_diag)[:, None])
        damped = H if len(index) == members else H[index]
        L, info = torch.linalg.cholesky_ex(damped)
        if bool((info != 0).any()):
            L = torch.where((info == 0)[:, None, None], L, torch.eye(cols, dtype=H.dtype, device=H.device))
        U_todo, info_u = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
        good = (info == 0) & (info_u == 0) & torch.isfinite(U_todo).flatten(1).all(-1)
        if bool(good.all()) and len(index) == members:
            return U_todo.contiguous(), factor, good
        U = torch.zeros_like(H) if U is None else U
        U[index[good]] = U_todo[good]
        ok[index[good]] = True
        if bool(ok.all()):
            break
        factor[index[~good]] = torch.where(factor[index[~good]] > 0, factor[index[~good]] * 10, 1e-4)
    return U, factor, ok


def _solve_members(W: torch.Tensor, H: torch.Tensor, spec: GridSpec, damp: float, blocksize: int, act_order: bool):
    members, rows, cols = W.shape
    group = spec.group_of(cols)
    dynamic_groups = group < cols and not act_order
    if dynamic_groups:  # every group is fitted in the column loop, from its updated weights
        groups = (members, rows, cols // group)
        scale = torch.empty(groups, dtype=spec.scale_torch_dtype, device=W.device)
        zero = torch.empty(groups, dtype=torch.float32, device=W.device)
    else:
        scale, zero = fit_grid(W, spec)
    H = H.clone()
    diag = H.diagonal(dim1=-2, dim2=-1)
    dead = diag == 0
    diag.masked_fill_(dead, 1.0)
    perm = None
    if act_order:
        perm = torch.argsort(H.diagonal(dim1=-2, dim2=-1), dim=-1, descending=True)
        W = W.gather(2, perm[:, None, :].expand(members, rows, cols))
        H = H.gather(1, perm[:, :, None].expand(members, cols, cols)).gather(2, perm[:, None, :].expand(members, cols, cols))
    U, used, ok = _factor(H, damp)
    if dynamic_groups:
        blocksize = group * max(1, blocksize // group)
    codes, losses = _column_loop(W.transpose(1, 2).contiguous(), U, scale, zero, spec, blocksize, perm, dynamic_groups)
    codes = codes.transpose(1, 2)
    if perm is not None:
        codes = torch.empty_like(codes).scatter_(2, perm[:, None, :].expand(members, rows, cols), codes)
    return codes.contiguous(), scale, zero, losses, used, ok


def _column_loop(
    Wt: torch.Tensor,
    U: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    spec: GridSpec,
    blocksize: int,
    perm: torch.Tensor | None,
    dynamic_groups: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ's column loop over `Wt` [members, cols, rows] (column-major: one column of every member
    is one contiguous [members, rows] slab), updated in place; codes come back column-major too.

    The arithmetic of the weights and codes is GPTQ's, operation for operation (so the codes
    are the same as a row-major loop's); the column-major layout makes every per-column read,
    write and rank-1 update a contiguous pass, and each column's scale and zero point are
    precomputed slabs instead of a gather per column. Python issues eight kernels per column
    on the symmetric grid (ten on the asymmetric one): the symmetric grid's signed level is
    written straight into the code slab (its zero point added once at the end), and the
    reported loss, Σ err²/2, is summed once per block from the block's errors instead of
    column by column (the same value to float rounding). Dynamic groups (`groupsize` without
    act-order) refit `scale`/`zero` in place as each group starts, from the already-updated
    weights.
    """
    members, cols, rows = Wt.shape
    group = spec.group_of(cols)
    scale_t = scale.transpose(1, 2).to(Wt.dtype)
    zero_t = zero.transpose(1, 2).to(Wt.dtype)
    if perm is None:
        column_group = [col // group for col in range(cols)]
    else:
        index = (perm // group)[:, :, None].expand(members, cols, rows)
        scale_t, zero_t = scale_t.gather(1, index), zero_t.gather(1, index)
        column_group = list(range(cols))
    pivots = U.diagonal(dim1=-2, dim2=-1)
    offset = symmetric_zero(spec.wbits)
    codes = torch.empty_like(Wt)
    losses = torch.zeros(members, rows, dtype=Wt.dtype, device=Wt.device)
    Err1 = torch.empty(members, blocksize, rows, dtype=Wt.dtype, device=Wt.device)
    update = torch.empty_like(Err1)
    s_col = z_col = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = Wt[:, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if dynamic_groups and col % group == 0:
                s, z = fit_grid(W1[:, i : i + group].transpose(1, 2), spec)
                scale[:, :, col // group], zero[:, :, col // group] = s[..., 0], z[..., 0]
                s_col, z_col = s[..., 0].to(Wt.dtype), z[..., 0].to(Wt.dtype)
            elif not dynamic_groups:
                s_col, z_col = scale_t[:, column_group[col]], zero_t[:, column_group[col]]
            w = W1[:, i]
            if spec.sym:  # zero point 2^(b-1) everywhere: the signed level is stored, the zero added at the end
                level = torch.div(w, s_col, out=codes[:, col]).round_().clamp_(-offset, spec.maxq - offset)
                residual = w - level * s_col
            else:
                code = torch.div(w, s_col, out=codes[:, col]).round_().add_(z_col).clamp_(0, spec.maxq)
                residual = w - (code - z_col).mul_(s_col)
            err = torch.div(residual, pivots[:, col, None], out=Err1[:, i])
            rest = i2 - i1 - i - 1
            if rest:
                W1[:, i + 1 :].sub_(torch.mul(U[:, col, col + 1 : i2, None], err[:, None, :], out=update[:, :rest]))
        losses += Err1[:, : i2 - i1].square().sum(1) / 2
        if i2 < cols:
            Wt[:, i2:] -= (Err1[:, : i2 - i1].transpose(1, 2).contiguous() @ U[:, i1:i2, i2:]).transpose(1, 2)
    if spec.sym:
        codes += offset
    return codes, losses


def rtn_codes(W: torch.Tensor, spec: GridSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale, zero = fit_grid(W, spec)
    group = spec.group_of(W.shape[-1])
    codes = to_codes(W.float(), scale.repeat_interleave(group, -1), zero.repeat_interleave(group, -1), spec.maxq)
    return codes, scale, zero


def gptq_solve(
    W: torch.Tensor,
    H: torch.Tensor,
    spec: GridSpec,
    damp: float = 0.01,
    blocksize: int = 128,
    act_order: bool = False,
    starved: torch.Tensor | None = None,
    chunk: int = 0,
) -> SolverResult:
    """Quantize `W` [B, out, in] against Hessians `H` [B, in, in]; `starved` members get RTN.

    Members that are starved, or whose damped Hessian never factors, fall back to round-to-
    nearest rather than being zeroed, and come back flagged in `fallback`.
    """
    members, rows, cols = W.shape
    device = H.device
    W = W.to(device=device, dtype=H.dtype)
    starved = torch.zeros(members, dtype=torch.bool) if starved is None else starved.cpu().bool()
    codes = torch.zeros(members, rows, cols, dtype=torch.uint8, device=device)
    groups = cols // spec.group_of(cols)
    scale = torch.zeros(members, rows, groups, dtype=spec.scale_torch_dtype, device=device)
    zero = torch.zeros(members, rows, groups, dtype=torch.float32, device=device)
    loss = torch.full((members, rows), float("nan"), dtype=torch.float64)
    damp_used = torch.full((members,), float("nan"), dtype=torch.float64)
    fallback = starved.clone()
    solve = (~starved).nonzero().squeeze(1).tolist()
    step = chunk or auto_chunk(rows, cols, H.element_size())
    for start in range(0, len(solve), step):
        index = torch.tensor(solve[start : start + step], dtype=torch.long)
        c, s, z, lo, used, ok = _solve_members(W[index.to(device)].clone(), H[index.to(device)], spec, damp, blocksize, act_order)
        ok = ok.cpu()
        good, bad = index[ok], index[~ok]
        codes[good.to(device)] = c[ok.to(device)].to(torch.uint8)
        scale[good.to(device)] = s[ok.to(device)]
        zero[good.to(device)] = z[ok.to(device)].float()
        loss[good] = lo[ok.to(device)].double().cpu()
        damp_used[good] = used[ok.to(device)].double().cpu()
        fallback[bad] = True
    rtn = fallback.nonzero().squeeze(1)
    if rtn.numel():
        c, s, z = rtn_codes(W[rtn.to(device)], spec)
        codes[rtn.to(device)] = c.to(torch.uint8)
        scale[rtn.to(device)] = s
        zero[rtn.to(device)] = z
    weight = QuantizedWeight(codes, scale, zero, spec.wbits, spec.sym)
    return SolverResult(weight, loss, damp_used, fallback)
