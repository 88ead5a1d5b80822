"""The paper's claims checked against a run's own numbers: `findings.md` beside the tables.

Each claim compares two method roles, found by what the methods are (rotation, calibration
source, algorithm), not by their names, so a paper run and the demo run get the same page.
The single-domain baseline is the calibration set the plain GPTQ rows use (WikiText2 in the
paper, prose windows in the demo). The measure is KL to the fp model averaged over every
evaluated text (perplexity where no KL was measured), at the lowest bit width both methods
ran, where methods differ most. A verdict is printed only when both roles were run; the
page never carries a number typed in by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from moequant.report.spec import MethodInfo, ReportSpec

EBSS = "ebss"


@dataclass(frozen=True)
class Role:
    rotation: bool
    calibration: str  # "ebss" or "baseline"
    algorithm: str
    all_experts: bool = False


def baseline_calibration(spec: ReportSpec) -> str | None:
    """The window set of the plain GPTQ row, else of any GPTQ row."""
    gptq = sorted((m for m in spec.methods.values() if m.algorithm == "gptq" and m.calibration), key=lambda m: m.rotation)
    return next((m.calibration for m in gptq if spec.calibration_sources.get(m.calibration) != EBSS), None)


def _is_paper_ebss(spec: ReportSpec, calibration: str) -> bool:
    return spec.calibration_sources.get(calibration) == EBSS and calibration not in spec.repetition_blocked


def _matches(method: MethodInfo, role: Role, spec: ReportSpec, baseline: str | None) -> bool:
    if method.rotation != role.rotation or method.algorithm != role.algorithm or method.calibration is None:
        return False
    if method.all_experts != role.all_experts:
        return False
    if role.calibration == EBSS:
        return _is_paper_ebss(spec, method.calibration)
    return method.calibration == baseline


def find(spec: ReportSpec, role: Role) -> str | None:
    """The first configured method that plays `role`."""
    baseline = baseline_calibration(spec)
    return next((name for name, m in spec.methods.items() if _matches(m, role, spec, baseline)), None)


def _score(results: pd.DataFrame, model: str, method: str, bits: int) -> tuple[float, str, dict[str, float]] | None:
    rows = results[(results["model"] == model) & (results["method"] == method) & (results["bits"] == bits)]
    for metric in ("kld", "ppl"):
        picked = rows[rows["metric"] == metric]
        if not picked.empty:
            per_text = {str(r.dataset): float(r.value) for r in picked.itertuples()}
            return sum(per_text.values()) / len(per_text), metric, per_text
    return None


def _bits_of(results: pd.DataFrame, model: str, method: str) -> set[int]:
    rows = results[(results["model"] == model) & (results["method"] == method)]
    return {int(b) for b in rows["bits"].dropna()}


CLAIMS: list[tuple[str, Role, Role]] = [
    (
        "EBSS generalises better than single-domain calibration",
        Role(True, EBSS, "agq"),
        Role(True, "baseline", "agq"),
    ),
    ("AGQ helps over GPTQ with the same data (EBSS)", Role(True, EBSS, "agq"), Role(True, EBSS, "gptq")),
    ("AGQ helps over GPTQ with the same data (single domain)", Role(True, "baseline", "agq"), Role(True, "baseline", "gptq")),
    ("Rotation helps GPTQ", Role(True, "baseline", "gptq"), Role(False, "baseline", "gptq")),
    ("MoEQuant++ beats QuaRot+GPTQ", Role(True, EBSS, "agq"), Role(True, "baseline", "gptq")),
    (
        "EBSS beats the peers' remedy (every token through every expert, single-domain data)",
        Role(True, EBSS, "agq"),
        Role(True, "baseline", "agq", all_experts=True),
    ),
]


def _compare(results: pd.DataFrame, spec: ReportSpec, model: str, claim: str, better: Role, worse: Role) -> str:
    a, b = find(spec, better), find(spec, worse)
    if a is None or b is None:
        return f"| {claim} | – | – | not measured: the config has no method for one side |"
    common = _bits_of(results, model, a) & _bits_of(results, model, b)
    if not common:
        return f"| {claim} | {spec.methods[a].label} vs {spec.methods[b].label} | – | not measured: no common bit width |"
    bits = min(common)
    sa, sb = _score(results, model, a, bits), _score(results, model, b, bits)
    if sa is None or sb is None or sa[1] != sb[1]:
        return f"| {claim} | {spec.methods[a].label} vs {spec.methods[b].label} | – | not measured: no shared metric |"
    metric = "KL" if sa[1] == "kld" else "PPL"
    texts = ", ".join(f"{t} {sa[2][t]:.4g}/{sb[2][t]:.4g}" for t in sorted(set(sa[2]) & set(sb[2])))
    verdict = "**reproduced**" if sa[0] < sb[0] else "**not reproduced**"
    change = 100 * (sa[0] - sb[0]) / sb[0] if sb[0] else math.nan
    evidence = f"W{bits} mean {metric} {sa[0]:.4g} vs {sb[0]:.4g} ({change:+.1f}%); per text: {texts}"
    return f"| {claim} | {spec.methods[a].label} vs {spec.methods[b].label} | {evidence} | {verdict} |"


def _balance(results: pd.DataFrame, spec: ReportSpec, model: str) -> str:
    claim = "EBSS balances experts better than every text-window set"
    sigmas = results[(results["model"] == model) & (results["metric"] == "sigma")]
    values = {str(r.dataset): float(r.value) for r in sigmas.itertuples()}
    ebss = {n: v for n, v in values.items() if _is_paper_ebss(spec, n)}
    windows = {n: v for n, v in values.items() if spec.calibration_sources.get(n) != EBSS}
    if not ebss or not windows:
        return f"| {claim} | σ | – | not measured: needs an EBSS set and a window set |"
    evidence = ", ".join(f"{spec.calibration.get(n, n)} {v:.4f}" for n, v in sorted(values.items(), key=lambda kv: kv[1]))
    verdict = "**reproduced**" if max(ebss.values()) < min(windows.values()) else "**not reproduced**"
    return f"| {claim} | σ of each calibration set | {evidence} | {verdict} |"


def _task_average(results: pd.DataFrame, model: str, method: str, bits: int) -> tuple[float, float] | None:
    """(mean accuracy over the tasks, its standard error) of one variant, when every task has both."""
    rows = results[(results["model"] == model) & (results["method"] == method) & (results["bits"] == bits)]
    accuracy = {str(r.dataset): float(r.value) for r in rows[rows["metric"] == "accuracy"].itertuples()}
    errors = {str(r.dataset): float(r.value) for r in rows[rows["metric"] == "accuracy_stderr"].itertuples()}
    if not accuracy or accuracy.keys() != errors.keys():
        return None
    count = len(accuracy)
    return sum(accuracy.values()) / count, math.sqrt(sum(e * e for e in errors.values())) / count


def _paired_error(fp: dict[str, dict[int, float]], rtn: dict[str, dict[int, float]], tasks: list[str]) -> float | None:
    """Standard error (percent) of the AVG gap from per-document differences on the same documents.

    Both variants answer the same questions, so the gap's error is the spread of their
    per-document differences, not the two scores' errors in quadrature (which treat them as
    independent samples). None when a task lacks per-document scores for either.
    """
    variance = 0.0
    for task in tasks:
        common = sorted(fp.get(task, {}).keys() & rtn.get(task, {}).keys())
        if len(common) < 2:
            return None
        diffs = [100.0 * (fp[task][doc] - rtn[task][doc]) for doc in common]
        mean = sum(diffs) / len(diffs)
        variance += sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)
    return math.sqrt(variance) / len(tasks)


def _tasks_separate(results: pd.DataFrame, spec: ReportSpec, model: str, documents: dict[tuple[str, int], Any]) -> str:
    """Whether the task AVG tells full precision from RTN at its lowest width: a check of the testbed, not a claim.

    The verdict uses the paired error where every task has per-document scores (the right
    test for two variants on one question set), the two scores' own errors otherwise.
    """
    claim = "The tasks tell FP from RTN (AVG apart by at least 2 standard errors)"
    fp = next((name for name, m in spec.methods.items() if m.algorithm in (None, "none") and not m.calibration), None)
    rtn = next((name for name, m in spec.methods.items() if m.algorithm == "rtn"), None)
    if fp is None or rtn is None or "bits" not in results:
        return f"| {claim} | – | – | not measured: needs an FP and an RTN row with tasks |"
    fp_bits = next((b for b in sorted(_bits_of(results, model, fp)) if _task_average(results, model, fp, b)), None)
    rtn_bits = sorted(b for b in _bits_of(results, model, rtn) if _task_average(results, model, rtn, b))
    if fp_bits is None or not rtn_bits:
        return f"| {claim} | – | – | not measured: needs task results with standard errors for FP and RTN |"
    full, low = _task_average(results, model, fp, fp_bits), _task_average(results, model, rtn, rtn_bits[0])
    assert full is not None and low is not None
    gap, spread = full[0] - low[0], math.sqrt(full[1] ** 2 + low[1] ** 2)
    fp_rows = results[(results["model"] == model) & (results["method"] == fp) & (results["bits"] == fp_bits)]
    fp_rows = fp_rows[fp_rows["metric"] == "accuracy"]
    tasks = sorted(set(fp_rows["dataset"].astype(str)))
    paired = _paired_error(documents.get((fp, fp_bits), {}), documents.get((rtn, rtn_bits[0]), {}), tasks)
    evidence = f"AVG {full[0]:.2f} ± {full[1]:.2f} vs {low[0]:.2f} ± {low[1]:.2f}: gap {gap:.2f} = {gap / spread:.1f} standard errors of the two scores"
    if paired:
        evidence += f", {gap / paired:.1f} of the paired difference over the same documents (± {paired:.2f})"
    verdict = "**yes**" if gap >= 2 * (paired or spread) else "**no**"
    return f"| {claim} | {spec.methods[fp].label} vs {spec.methods[rtn].label} W{rtn_bits[0]} | {evidence} | {verdict} |"


def _outlier_context(spec: ReportSpec, residual: dict[str, list[float]] | None) -> list[str]:
    """The residual stream the rotation acts on, measured on the baselines' windows: why rotation may not help here."""
    ratios, kurtosis = (residual or {}).get("channel_max_over_rms"), (residual or {}).get("kurtosis")
    if not ratios or not kurtosis:
        return []
    where = spec.calibration.get(baseline_calibration(spec) or "", "the baselines' windows")
    return [
        "",
        f"Residual stream entering each decoder layer, on {where}: largest channel RMS over the overall RMS "
        f"{min(ratios):.2f}–{max(ratios):.2f}, kurtosis {min(kurtosis):.2f}–{max(kurtosis):.2f} (a Gaussian has 3). "
        "Rotation spreads outlier channels; large LLMs carry channels tens to hundreds of times the RMS "
        "(massive activations), so a stream near these values leaves a rotation little to fix.",
    ]


PAPER_RELATIVE_SIGMA = "DeepSeek-MoE-16B (E = 64) in the paper: WikiText2 2.7, EBSS 0.33"


def _relative_sigma(results: pd.DataFrame, spec: ReportSpec, model: str, experts: int | None) -> list[str]:
    """σ·E (σ over the mean share 1/E) of each calibration set: imbalance comparable across expert counts."""
    sigmas = results[(results["model"] == model) & (results["metric"] == "sigma")]
    if not experts or sigmas.empty:
        return []
    values = sorted(((str(r.dataset), float(r.value) * experts) for r in sigmas.itertuples()), key=lambda kv: kv[1])
    shown = ", ".join(f"{spec.calibration.get(n, n)} {v:.2f}" for n, v in values)
    return ["", f"Relative imbalance σ·E (E = {experts}): {shown}; {PAPER_RELATIVE_SIGMA}."]


def findings_markdown(spec: ReportSpec, results: pd.DataFrame, measured: dict[str, dict[str, Any]] | None = None) -> str:
    """One table per model: claim, the two methods compared, the numbers, the verdict.

    `measured` (model → `residual_stream` of the baselines' window set, the model's expert
    count `experts`, and `task_documents`, (method, bits) → per-document task scores) adds the testbed's own properties beside the verdicts: the
    outliers a rotation acts on and the imbalance EBSS targets, relative to the paper's.
    """
    lines = ["# Findings: the paper's claims on this run's numbers", ""]
    lines.append(
        "Measure: KL to the fp model (nats/token) averaged over every evaluated text, lower is better, "
        "at the lowest bit width both methods ran; per text as better/worse. Generated by `moequant tables`."
    )
    if spec.seed_methods:
        seeds = len(next(iter(spec.seed_methods.values())))
        lines.append(f"Calibrated methods and σ are means over {seeds} calibration seeds (their spread is in the tables).")
    for model, label in spec.models.items():
        lines += ["", f"## {label}", "", "| claim | compared | numbers | verdict |", "|---|---|---|---|"]
        lines.append(_balance(results, spec, model))
        lines += [_compare(results, spec, model, claim, better, worse) for claim, better, worse in CLAIMS]
        context = (measured or {}).get(model, {})
        lines.append(_tasks_separate(results, spec, model, context.get("task_documents") or {}))
        lines += _outlier_context(spec, context.get("residual_stream"))
        lines += _relative_sigma(results, spec, model, context.get("experts"))
    return "\n".join(lines) + "\n"
