"""What a residual-stream norm computes, found from its behaviour rather than its class name.

Folding a scale into a norm (rotation, AWQ) needs its per-channel gain g. Most families
compute g ⊙ x / rms(x) with g stored as the weight; Gemma-style norms (Qwen3-Next,
Qwen3.5) store g − 1 and compute (1 + weight) ⊙ x / rms(x); LayerNorm families (PhiMoE)
subtract the mean first and add a bias: g ⊙ (x − mean(x)) / std(x) + b.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_PROBE_SEED = 1234


@dataclass(frozen=True)
class NormForm:
    """gain = offset + weight; `centred` norms subtract the mean (and may add their `bias`)."""

    offset: float
    centred: bool


FORMS = (NormForm(0.0, False), NormForm(1.0, False), NormForm(0.0, True))
"""The forms recognised: RMS with weight or 1 + weight as gain, and LayerNorm."""


@torch.no_grad()
def norm_form(norm: nn.Module, hidden_size: int) -> tuple[NormForm | None, float]:
    """(the form `norm` computes, or None when none fits; the best form's relative deviation).

    The probe has a large mean offset, so mean subtraction is told apart from plain RMS
    scaling; its variance is large against any norm's epsilon, which therefore never matters.
    """
    params = dict(norm.named_parameters())
    weight = params.get("weight")
    assert weight is not None and tuple(weight.shape) == (hidden_size,)
    bias = params.get("bias")
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    probe = (torch.randn(4, hidden_size, generator=generator, dtype=torch.float64) + 1.0) * 10.0
    out = norm(probe.to(device=weight.device, dtype=weight.dtype)).double().cpu()
    centred = probe - probe.mean(-1, keepdim=True)
    units = {False: probe / probe.pow(2).mean(-1, keepdim=True).sqrt(),
             True: centred / centred.pow(2).mean(-1, keepdim=True).sqrt()}
    tolerance = 1e-4 if weight.dtype in (torch.float32, torch.float64) else 3e-2
    errors = {}
    for form in FORMS:
        if bias is not None and not form.centred:
            continue
        expected = (form.offset + weight.detach().double().cpu()) * units[form.centred]
        if bias is not None:
            expected = expected + bias.detach().double().cpu()
        errors[form] = ((out - expected).abs().max() / expected.abs().max()).item()
    best = min(errors, key=lambda form: errors[form])
    return (best if errors[best] <= tolerance else None), errors[best]
