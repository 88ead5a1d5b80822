"""findings.md: each claim's verdict follows the run's numbers, roles found by what methods are."""

from __future__ import annotations

import pandas as pd

from moequant.report.findings import Role, find, findings_markdown
from moequant.report.spec import spec_from_dict

SPEC = {
    "models": {"demo": {"label": "Demo"}},
    "methods": {
        "fp16": {"label": "FP", "bits": [16]},
        "gptq": {"label": "GPTQ", "calibration": "prose", "algorithm": "gptq", "bits": [3]},
        "quarot_gptq": {"label": "QuaRot+GPTQ", "rotation": True, "calibration": "prose", "algorithm": "gptq", "bits": [3]},
        "quarot_ebss_gptq": {"label": "+EBSS", "rotation": True, "calibration": "ebss", "algorithm": "gptq", "bits": [3]},
        "quarot_agq": {"label": "+AGQ", "rotation": True, "calibration": "prose", "algorithm": "agq", "bits": [3]},
        "moequant++": {"label": "MoEQuant++", "rotation": True, "calibration": "ebss", "algorithm": "agq", "bits": [3]},
        "all_experts": {
            "label": "all experts", "rotation": True, "calibration": "prose", "algorithm": "agq", "bits": [3],
            "all_experts": True,
        },
    },
    "calibration": {"ebss": {"label": "EBSS", "source": "ebss"}, "prose": {"label": "prose", "source": "text:p.txt"}},
    "tables": [],
}


def _results(kl: dict[str, float], sigma: dict[str, float]) -> pd.DataFrame:
    rows = [
        {"model": "demo", "method": m, "label": m, "bits": 3, "metric": "kld", "dataset": d, "value": v * f}
        for m, v in kl.items()
        for d, f in (("prose", 1.0), ("code", 2.0))
    ]
    rows += [{"model": "demo", "method": "", "label": "", "bits": None, "metric": "sigma", "dataset": n, "value": v} for n, v in sigma.items()]
    return pd.DataFrame(rows)


def _verdicts(markdown: str) -> dict[str, str]:
    rows = [line.split(" | ") for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].lstrip("| "): cells[-1].rstrip(" |") for cells in rows[1:] if cells[0] != "| claim"}


def test_roles_are_found_by_rotation_calibration_source_and_algorithm() -> None:
    spec = spec_from_dict(SPEC)
    assert find(spec, Role(True, "ebss", "agq")) == "moequant++"
    assert find(spec, Role(True, "baseline", "gptq")) == "quarot_gptq"
    assert find(spec, Role(False, "baseline", "gptq")) == "gptq"
    assert find(spec, Role(True, "baseline", "agq")) == "quarot_agq"
    assert find(spec, Role(True, "baseline", "agq", all_experts=True)) == "all_experts"


def test_verdicts_follow_the_numbers_both_ways() -> None:
    spec = spec_from_dict(SPEC)
    paper_like = {"gptq": 0.05, "quarot_gptq": 0.04, "quarot_ebss_gptq": 0.035, "quarot_agq": 0.038, "moequant++": 0.03, "all_experts": 0.037}
    verdicts = _verdicts(findings_markdown(spec, _results(paper_like, {"ebss": 0.01, "prose": 0.05})))
    assert set(verdicts.values()) == {"**reproduced**"}, verdicts
    inverted = {name: 0.1 - value for name, value in paper_like.items()}
    verdicts = _verdicts(findings_markdown(spec, _results(inverted, {"ebss": 0.06, "prose": 0.05})))
    assert set(verdicts.values()) == {"**not reproduced**"}, verdicts


def test_a_claim_without_its_methods_says_not_measured() -> None:
    raw = {**SPEC, "methods": {k: v for k, v in SPEC["methods"].items() if k != "gptq"}}
    markdown = findings_markdown(spec_from_dict(raw), _results({"quarot_gptq": 0.04, "moequant++": 0.03}, {}))
    verdicts = _verdicts(markdown)
    assert verdicts["Rotation helps GPTQ"].startswith("not measured")
    assert verdicts["MoEQuant++ beats QuaRot+GPTQ"] == "**reproduced**"
    assert "W3 mean KL 0.045 vs 0.06" in markdown


def test_a_repetition_blocked_ebss_set_is_a_variant_not_the_method() -> None:
    raw = {
        **SPEC,
        "methods": {
            "blocked": {"label": "blocked", "rotation": True, "calibration": "ebss_block", "algorithm": "agq", "bits": [3]},
            **SPEC["methods"],
        },
        "calibration": {**SPEC["calibration"], "ebss_block": {"label": "EBSS blocked", "source": "ebss", "no_repeat_ngram": 4}},
    }
    spec = spec_from_dict(raw)
    assert find(spec, Role(True, "ebss", "agq")) == "moequant++", "listed first, yet not the paper's EBSS"
    verdicts = _verdicts(findings_markdown(spec, _results({}, {"ebss": 0.01, "ebss_block": 0.09, "prose": 0.05})))
    assert verdicts["EBSS balances experts better than every text-window set"] == "**reproduced**"
