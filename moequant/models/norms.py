"""What a residual-stream norm computes, found from its behaviour rather than its class name.

Folding a scale into a norm (rotation, AWQ) needs its per-channel gain g in
g ⊙ x / rms(x). Most families store g as the weight; Gemma-style norms (Qwen3-Next,
Qwen3.5) store g − 1 and compute (1 + weight) ⊙ x / rms(x).
"""

from __future__ import annotations

import torch
from torch import nn

_PROBE_SEED = 1234
OFFSETS = (0.0, 1.0)
"""The gain forms recognised: weight (0) and 1 + weight (1)."""


@torch.no_grad()
def gain_offset(norm: nn.Module, hidden_size: int) -> tuple[float | None, float]:
    """(offset c with gain = c + weight, or None when neither form fits; the best form's relative deviation).

    The probe has a large mean offset, so LayerNorm-style mean subtraction cannot pass.
    """
    weight = dict(norm.named_parameters()).get("weight")
    assert weight is not None and tuple(weight.shape) == (hidden_size,)
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    probe = (torch.randn(4, hidden_size, generator=generator, dtype=torch.float64) + 1.0) * 10.0
    out = norm(probe.to(device=weight.device, dtype=weight.dtype)).double().cpu()
    unit = probe / probe.pow(2).mean(-1, keepdim=True).sqrt()
    tolerance = 1e-4 if weight.dtype in (torch.float32, torch.float64) else 3e-2
    errors = {}
    for offset in OFFSETS:
        expected = (offset + weight.detach().double().cpu()) * unit
        errors[offset] = ((out - expected).abs().max() / expected.abs().max()).item()
    best = min(errors, key=lambda offset: errors[offset])
    return (best if errors[best] <= tolerance else None), errors[best]
