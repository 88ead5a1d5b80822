"""EBSS on a trained MoE: its sets must be far better balanced than text windows (method §2).

The demo's experts specialise by domain, so windows of one domain (prose, code, math — the
paper's WikiText2, HumanEval, GSM8K) are unbalanced. The demo is trained with a per-layer
balance loss on the mixed corpus, so mixed windows are already fairly balanced; EBSS must
still beat them. On a model this small the mean log-prob differences between candidates
dwarf σ/τ at the paper's τ = 1.2, so the test runs the search at τ = 0.02, w = 10 (the
measurements for both settings are in docs/calibration.md).

EBSS σ over each single domain's σ, across trainings (the corpus comes from the interpreter's
stdlib, so another Python patch release trains another demo): at most 0.23 and 0.18 (seeds 1
and 2, Python 3.11.7) and 0.26 (seed 0, Python 3.11.2); the bar is a third.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moequant.calib.build import build_calibration
from moequant.calib.config import CalibConfig
from moequant.loading import load_model, load_tokenizer

SINGLE_DOMAINS = ("prose", "code", "math")
NSAMPLES, SEQLEN = 16, 64


@pytest.mark.slow
def test_ebss_balances_experts_far_better_than_text_windows(trained_demo_dir: Path) -> None:
    model, tokenizer = load_model(str(trained_demo_dir)), load_tokenizer(str(trained_demo_dir))
    ebss_config = CalibConfig("ebss", NSAMPLES, SEQLEN, tau=0.02, width=10, batch_size=NSAMPLES)
    _, ebss = build_calibration(model, tokenizer, ebss_config)
    windows = {}
    for domain in (*SINGLE_DOMAINS, "mixed"):
        source = f"text:{trained_demo_dir / 'data' / domain / 'test.txt'}"
        _, windows[domain] = build_calibration(model, tokenizer, CalibConfig(source, NSAMPLES, SEQLEN))
    report = {name: round(summary["sigma"], 4) for name, summary in windows.items()}
    print(f"sigma: ebss {ebss['sigma']:.4f} (perplexity {ebss['perplexity']:.1f}), windows {report}")
    for domain in SINGLE_DOMAINS:
        assert ebss["sigma"] <= windows[domain]["sigma"] / 3, (domain, ebss["sigma"], report)
    assert ebss["sigma"] < windows["mixed"]["sigma"], (ebss["sigma"], report)
    assert ebss["perplexity"] < windows["mixed"]["perplexity"], "EBSS samples are the model's own likely text"
