import pytest
import torch

from moequant.quant.grid import (
    CLIP_CHUNK_ELEMENTS,
    GridSpec,
    dequantize,
    fake_quantize,
    fit_grid,
    pack,
    params_from_range,
    quantize,
    symmetric_zero,
    unpack,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("groupsize", [-1, 8])
def test_codes_lie_on_the_grid(bits, sym, groupsize):
    w = torch.randn(3, 5, 32)
    spec = GridSpec(bits, sym=sym, groupsize=groupsize)
    scale, zero = fit_grid(w, spec)
    assert scale.shape == (3, 5, 32 // spec.group_of(32))
    q = quantize(w, scale, zero, bits, sym)
    assert int(q.codes.max()) <= 2**bits - 1
    assert q.codes.dtype == torch.uint8
    if sym:
        assert torch.all(q.zero == symmetric_zero(bits))
    else:
        assert torch.equal(q.zero, q.zero.round()) and int(q.zero.max()) <= 2**bits - 1
    deq = q.dequantize()
    steps = (deq / scale.repeat_interleave(spec.group_of(32), -1))
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert (deq - w).abs().max() < scale.max() * 2**bits


def test_clip_search_never_worse_than_full_range():
    w = torch.randn(16, 64) * torch.linspace(0.1, 3, 64)
    full = GridSpec(3, clip=False)
    clipped = GridSpec(3, clip=True)

    def err(spec):
        s, z = fit_grid(w, spec)
        return (quantize(w, s, z, 3, True).dequantize() - w).abs().pow(2.4).sum(-1)

    assert torch.all(err(clipped) <= err(full) + 1e-5)
    assert err(clipped).sum() < err(full).sum()


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_round_trip(bits):
    codes = torch.randint(0, 2**bits, (3, 7, 45), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (3, 7, -(-45 * bits // 32))
    assert torch.equal(unpack(packed, bits, tuple(codes.shape)), codes)


def test_packing_is_compressed_tensors_little_endian_bit_stream():
    """Code c is stored as q = c − 2^(b−1), packed as q + 2^(b−1): the bits of c, first code lowest."""
    codes = torch.tensor([[9, 0, 15, 3, 8, 8, 8, 1] * 4], dtype=torch.uint8)
    word = sum(int(c) << (4 * i) for i, c in enumerate(codes[0, :8]))
    signed = word - (1 << 32) if word >= 1 << 31 else word
    assert pack(codes, 4).tolist() == [[signed] * 4]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_scales_are_rounded_to_the_scale_dtype_before_codes(dtype):
    w = torch.randn(4, 32)
    spec = GridSpec(4, groupsize=8, scale_dtype=dtype)
    scale, zero = fit_grid(w, spec)
    assert scale.dtype == getattr(torch, dtype)
    q = quantize(w, scale, zero, 4, True)
    assert torch.equal(q.codes, quantize(w, scale.float(), zero, 4, True).codes)


def test_zero_row_gets_a_valid_grid():
    w = torch.zeros(2, 8)
    s, z = fit_grid(w, GridSpec(4, sym=False))
    q = quantize(w, s, z, 4, False)
    assert torch.all(s > 0)
    assert torch.equal(dequantize(q.codes, q.scale, q.zero, 8), w)


def reference_fit_grid(w: torch.Tensor, spec: GridSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip search as the method states it: one full pass per shrink factor, keep the first best."""
    wf = w.float().reshape(*w.shape[:-1], -1, spec.group_of(w.shape[-1]))
    xmin, xmax = wf.amin(-1).clamp(max=0), wf.amax(-1).clamp(min=0)
    scale, zero = params_from_range(xmin, xmax, spec)
    best = torch.full(scale.shape, float("inf"))
    for step in range(int(spec.clip_maxshrink * spec.clip_grid)):
        shrink = 1 - step / spec.clip_grid
        s, z = params_from_range(shrink * xmin, shrink * xmax, spec)
        err = (fake_quantize(wf, s.unsqueeze(-1), z.unsqueeze(-1), spec.maxq) - wf).abs_().pow_(spec.clip_norm).sum(-1)
        better = err < best
        best, scale, zero = torch.where(better, err, best), torch.where(better, s, scale), torch.where(better, z, zero)
    return scale, zero


@pytest.mark.parametrize(
    "spec",
    [
        GridSpec(4),
        GridSpec(3, sym=False, groupsize=32),
        GridSpec(4, groupsize=16, scale_dtype="bfloat16"),
        GridSpec(2, sym=False, scale_dtype="float16", clip_norm=2.0),
        GridSpec(8, groupsize=64, clip_grid=20, clip_maxshrink=0.5),
    ],
    ids=["w4", "w3-asym-g32", "w4-g16-bf16", "w2-asym-fp16", "w8-g64-coarse"],
)
@pytest.mark.parametrize("budget", [1 << 12, 1 << 20], ids=["tiny-blocks", "default-blocks"])
def test_blocked_clip_search_chooses_exactly_the_reference_grid(spec, budget, monkeypatch):
    monkeypatch.setitem(CLIP_CHUNK_ELEMENTS, "cpu", budget)
    g = torch.Generator().manual_seed(spec.wbits)
    w = torch.randn(3, 37, 192, generator=g) * torch.rand(192, generator=g) ** 3
    w[0, 0] = 0.0
    scale, zero = fit_grid(w, spec)
    ref_scale, ref_zero = reference_fit_grid(w, spec)
    assert scale.dtype == ref_scale.dtype and zero.dtype == ref_zero.dtype
    assert torch.equal(scale, ref_scale) and torch.equal(zero, ref_zero)
    assert torch.equal(quantize(w, scale, zero, spec.wbits, spec.sym).codes,
                       quantize(w, ref_scale, ref_zero, spec.wbits, spec.sym).codes)


def test_nan_group_keeps_the_full_range_like_the_reference():
    w = torch.randn(4, 64)
    w[1, 5] = float("nan")
    spec = GridSpec(4, groupsize=16)
    for got, expected in zip(fit_grid(w, spec), reference_fit_grid(w, spec)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


def test_no_shrink_factor_is_the_plain_range():
    w = torch.randn(4, 32)
    assert all(torch.equal(a, b) for a, b in zip(fit_grid(w, GridSpec(4, clip_maxshrink=0.0)), fit_grid(w, GridSpec(4, clip=False))))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("shape, groupsize", [((64, 176, 256), -1), ((8, 256, 176), -1), ((3, 37, 1792), -1),
                                               ((5, 33, 128), 8), ((2, 19, 384), 128), ((4, 9, 7), -1)])
def test_screened_clip_search_picks_what_the_unscreened_one_picks(shape, groupsize, bits, threads, monkeypatch):
    """Screening leaves the factors, scales and codes of scoring every factor, partial blocks and threads included."""
    from moequant.quant import grid

    g = torch.Generator().manual_seed(bits * 7 + len(shape))
    w = torch.randn(*shape, generator=g) * 0.02
    w[..., 0, :3] *= 40  # outliers: the clipping factors matter
    spec = GridSpec(bits, groupsize=groupsize)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        screened = fit_grid(w, spec)
        monkeypatch.setattr(grid, "_screenable", lambda d, norm: False)
        full = fit_grid(w, spec)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(screened[0], full[0]) and torch.equal(screened[1], full[1])


def test_screening_runs_on_whole_vector_blocks_and_rules_out_most_factors(monkeypatch):
    from moequant.quant import grid

    kept = []
    screened = grid._screened_errors

    def counting(d, norm):
        errors = screened(d, norm)
        kept.append(float(torch.isfinite(errors).float().mean()))
        return errors

    monkeypatch.setattr(grid, "_screened_errors", counting)
    fit_grid(torch.randn(64, 176, 256, generator=torch.Generator().manual_seed(0)), GridSpec(4))
    assert kept and max(kept) < 0.3, "screening must run and leave under a third of the factors to score exactly"


@pytest.mark.parametrize("norm, tightness", [(2.0, 1 - 1e-5), (2.4, 0.9), (3.0, 0.8)])
def test_error_bound_never_exceeds_the_error(norm, tightness):
    from moequant.quant.grid import error_bound

    g = torch.Generator().manual_seed(int(norm * 10))
    rows = torch.cat([
        torch.rand(200, 64, generator=g) - 0.5,  # rounding errors
        torch.randn(200, 64, generator=g) * torch.rand(200, 1, generator=g) ** 4,  # heavy tails, clipping
        torch.zeros(1, 64),  # a perfect factor
        torch.full((1, 64), 0.25),  # equal magnitudes: where the bound is exact
    ])
    magnitudes = rows.abs()
    squares, bound = error_bound(magnitudes.clone(), norm)
    exact = magnitudes.double().pow(norm).sum(-1)
    torch.testing.assert_close(squares.double(), magnitudes.double().square().sum(-1), rtol=1e-5, atol=0)
    assert bool((bound.double() <= exact * (1 + 1e-5)).all())
    assert bound[-2] == 0 and abs(float(bound[-1]) / float(exact[-1]) - 1) < 1e-5
    assert float((bound.double()[:200] / exact[:200]).min()) > tightness, "on rounding errors the bound is close"


def test_an_overflowing_bound_never_rules_a_factor_out():
    from moequant.quant import grid

    d = torch.full((2, 1, 64), 1e13)
    d[0] = 1e12  # the leader; the other factor's bound overflows float32 while its error does not
    errors = grid._screened_errors(d.clone(), 2.4)
    assert bool(torch.isfinite(errors).all())
