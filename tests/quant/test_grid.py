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
