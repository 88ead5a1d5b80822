import pytest
import torch

from moequant.quant.hessian import HessianStack, MemberGroups


def routed_tokens(tokens=300, dim=24, members=8, top_k=2, seed=0):
    """Skewed top-k routing (member 3 never chosen), with one id outside the members."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, members, generator=g) + torch.linspace(2, -2, members)
    logits[:, 3] = -torch.inf
    coeffs, ids = logits.softmax(-1).topk(top_k, dim=-1)
    ids[5, 1] = members
    return torch.randn(tokens, dim, generator=g), ids, coeffs


def reference_stack(x, ids, coeffs, members, dtype, weighting):
    """One `add` per member with the tokens `torch.where` finds for it: the per-expert loop."""
    stack = HessianStack(members, x.shape[-1], dtype, torch.device("cpu"))
    for member in range(members):
        token, slot = torch.where(ids == member)
        c = coeffs[token, slot].float()
        stack.add(member, x[token], None if weighting is None else c if weighting == "c" else c * c, c)
    return stack


def test_groups_list_each_members_pairs_in_where_order():
    _, ids, _ = routed_tokens()
    groups = MemberGroups.of(ids, 8)
    assert groups.sizes[3] == 0 and sum(groups.sizes) == ids.numel() - 1
    start = 0
    for member, size in enumerate(groups.sizes):
        token, slot = torch.where(ids == member)
        assert torch.equal(groups.token[start : start + size], token)
        assert torch.equal(groups.slot[start : start + size], slot)
        start += size


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighting", [None, "c", "c2"])
def test_grouped_accumulation_equals_the_per_member_loop_bit_for_bit(dtype, weighting):
    x, ids, coeffs = routed_tokens()
    stack = HessianStack(8, x.shape[-1], dtype, torch.device("cpu"))
    groups = MemberGroups.of(ids, 8)
    c = coeffs[groups.token, groups.slot].float()
    weight = None if weighting is None else c if weighting == "c" else c * c
    stack.add_grouped(x, groups, weight, c)
    # a second micro-batch accumulates on top of the first, as `add` does; its rows already laid out by group
    stack.add_grouped(x[groups.token], groups.laid_out(), weight, c)
    twice = reference_stack(x, ids, coeffs, 8, dtype, weighting)
    for member in range(8):
        token, slot = torch.where(ids == member)
        c = coeffs[token, slot].float()
        twice.add(member, x[token], None if weighting is None else c if weighting == "c" else c * c, c)
    assert torch.equal(stack.H, twice.H)
    assert torch.equal(stack.tokens, twice.tokens)
    torch.testing.assert_close(stack.mass, twice.mass, rtol=1e-12, atol=0)
    assert torch.equal(stack.H[3], torch.zeros_like(stack.H[3]))


def test_no_routed_token_changes_nothing():
    stack = HessianStack(4, 6, torch.float32, torch.device("cpu"))
    groups = MemberGroups.of(torch.full((5, 2), 7), 4)
    stack.add_grouped(torch.randn(0, 6), groups)
    assert groups.sizes == [0, 0, 0, 0]
    assert not stack.H.any() and not stack.tokens.any() and not stack.mass.any()
