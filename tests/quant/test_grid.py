import pytest
import torch

from moequant.quant.grid import GridSpec, dequantize, fit_grid, pack, quantize, symmetric_zero, unpack


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
    codes = torch.randint(0, 2**bits, (3, 7, 11), dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.numel() == -(-codes.numel() * bits // 8)
    assert torch.equal(unpack(packed, bits, tuple(codes.shape)), codes)


def test_zero_row_gets_a_valid_grid():
    w = torch.zeros(2, 8)
    s, z = fit_grid(w, GridSpec(4, sym=False))
    q = quantize(w, s, z, 4, False)
    assert torch.all(s > 0)
    assert torch.equal(dequantize(q.codes, q.scale, q.zero, 8), w)
