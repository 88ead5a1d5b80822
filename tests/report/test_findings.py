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


TASKS_CHECK = "The tasks tell FP from RTN (AVG apart by at least 2 standard errors)"


def _verdicts(markdown: str, with_tasks: bool = False) -> dict[str, str]:
    rows = [line.split(" | ") for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    found = {cells[0].lstrip("| "): cells[-1].rstrip(" |") for cells in rows[1:] if cells[0] != "| claim"}
    return found if with_tasks else {k: v for k, v in found.items() if k != TASKS_CHECK}


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


def _task_rows(method: str, bits: int, accuracy: list[float], stderr: list[float]) -> list[dict]:
    rows = []
    for index, (value, error) in enumerate(zip(accuracy, stderr)):
        base = {"model": "demo", "method": method, "label": method, "bits": bits, "dataset": f"t{index}"}
        rows += [{**base, "metric": "accuracy", "value": value}, {**base, "metric": "accuracy_stderr", "value": error}]
    return rows


def test_the_tasks_check_weighs_the_gap_against_the_standard_errors() -> None:
    raw = {**SPEC, "methods": {**SPEC["methods"], "rtn": {"label": "RTN", "algorithm": "rtn", "bits": [4, 3]}}}
    spec = spec_from_dict(raw)
    apart = pd.DataFrame(_task_rows("fp16", 16, [60, 70], [3, 4]) + _task_rows("rtn", 3, [50, 55], [3, 4]) + _task_rows("rtn", 4, [60, 70], [3, 4]))
    markdown = findings_markdown(spec, apart)
    assert _verdicts(markdown, with_tasks=True)[TASKS_CHECK] == "**yes**"
    assert "AVG 65.00 ± 2.50 vs 52.50 ± 2.50: gap 12.50 = 3.5 standard errors" in markdown, "W3, the lowest width"
    close = pd.DataFrame(_task_rows("fp16", 16, [60, 70], [3, 4]) + _task_rows("rtn", 3, [58, 66], [3, 4]))
    assert _verdicts(findings_markdown(spec, close), with_tasks=True)[TASKS_CHECK] == "**no**"
    assert _verdicts(findings_markdown(spec, _results({"gptq": 0.05}, {})), with_tasks=True)[TASKS_CHECK].startswith("not measured")


def test_the_measured_residual_stream_sits_beside_the_claims() -> None:
    spec = spec_from_dict(SPEC)
    measured = {"demo": {"residual_stream": {"channel_max_over_rms": [1.2, 1.45], "kurtosis": [2.7, 3.1]}, "experts": 8}}
    markdown = findings_markdown(spec, _results({"gptq": 0.05}, {"ebss": 0.01, "prose": 0.05}), measured)
    assert "on prose: largest channel RMS over the overall RMS 1.20–1.45, kurtosis 2.70–3.10" in markdown
    assert "Relative imbalance σ·E (E = 8): EBSS 0.08, prose 0.40; DeepSeek-MoE-16B (E = 64) in the paper" in markdown
    assert "Residual stream" not in findings_markdown(spec, _results({"gptq": 0.05}, {}))


def test_a_paired_error_over_the_same_documents_decides_when_every_task_has_them() -> None:
    raw = {**SPEC, "methods": {**SPEC["methods"], "rtn": {"label": "RTN", "algorithm": "rtn", "bits": [3]}}}
    spec = spec_from_dict(raw)
    # 100 documents per task: RTN loses exactly 4 that FP answers and agrees on the rest, so the
    # gap (4 points) is within 2 unpaired errors (4.9 each) yet far outside the paired one.
    fp_docs = {f"t{t}": {d: float(d % 2) for d in range(100)} for t in range(2)}
    rtn_docs = {task: {d: (0.0 if d in (1, 3, 5, 7) else v) for d, v in docs.items()} for task, docs in fp_docs.items()}
    frame = pd.DataFrame(_task_rows("fp16", 16, [50, 50], [5, 5]) + _task_rows("rtn", 3, [46, 46], [5, 5]))
    without = _verdicts(findings_markdown(spec, frame), with_tasks=True)[TASKS_CHECK]
    measured = {"demo": {"task_documents": {("fp16", 16): fp_docs, ("rtn", 3): rtn_docs}}}
    markdown = findings_markdown(spec, frame, measured)
    assert without == "**no**"
    assert _verdicts(markdown, with_tasks=True)[TASKS_CHECK] == "**yes**"
    assert "gap 4.00 = 0.8 standard errors of the two scores, 2.9 of the paired difference over the same documents (± 1.39)" in markdown
    one_task_short = {**measured["demo"]["task_documents"], ("rtn", 3): {"t0": rtn_docs["t0"]}}
    short = findings_markdown(spec, frame, {"demo": {"task_documents": one_task_short}})
    assert _verdicts(short, with_tasks=True)[TASKS_CHECK] == "**no**", "a task without documents falls back to the unpaired errors"
