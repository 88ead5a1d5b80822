"""What the plan knows of each quantization algorithm without importing it.

The Snakemake process has no torch, so it cannot ask `moequant.quant.registry`. This table
says which algorithms need calibration data and which `moequant quantize` flags each takes
as a method's `options` (a key is the flag without its dashes, `act_order` for
`--act-order`). tests/plan/test_algorithms.py rebuilds it from the registry and the
command's parser, so the two cannot part silently.
"""

from __future__ import annotations

from dataclasses import dataclass

SETTINGS = (
    "asym",
    "batch_size",
    "clip",
    "clip_grid",
    "clip_maxshrink",
    "clip_norm",
    "device",
    "expert_chunk",
    "groupsize",
    "hessian_dtype",
    "keep_router_fp",
    "min_tokens",
    "no_clip",
    "quantize_router",
    "scale_dtype",
    "sym",
)
"""Flags of the settings every algorithm shares (grid and run), less `wbits`: a method's `bits` sets it."""

COMMAND_OPTIONS = ("dtype", "nsamples")
"""Flags of `moequant quantize` itself that a method may set."""


@dataclass(frozen=True)
class AlgorithmFacts:
    needs_calibration: bool
    options: tuple[str, ...]
    """Flags of the algorithm's own options."""


_GPTQ = ("act_order", "all_experts", "blocksize", "damp", "no_act_order", "no_all_experts")
_AWQ = (
    "awq_alpha",
    "awq_clip_grid",
    "awq_clip_maxshrink",
    "awq_clip_tokens",
    "awq_n_grid",
    "awq_search_clip",
    "awq_search_tokens",
    "no_awq_search_clip",
)

ALGORITHMS = {
    "agq": AlgorithmFacts(True, tuple(sorted((*_GPTQ, "agq_projections", "agq_weight")))),
    "agq_awq": AlgorithmFacts(True, _AWQ),
    "awq": AlgorithmFacts(True, _AWQ),
    "gptq": AlgorithmFacts(True, _GPTQ),
    "rtn": AlgorithmFacts(False, ()),
}


def method_options(algorithm: str) -> list[str]:
    """Every `options` key a method of `algorithm` may have, sorted."""
    return sorted((*SETTINGS, *COMMAND_OPTIONS, *ALGORITHMS[algorithm].options))


def takers(key: str) -> list[str]:
    """The algorithms that have `key` among their own options."""
    return [name for name, facts in ALGORITHMS.items() if key in facts.options]
