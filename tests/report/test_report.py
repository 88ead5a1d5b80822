"""Tables and plots from a hand-made results folder: values, layout, missing results, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from moequant.cli import main
from moequant.errors import UsageError
from moequant.report import build_report, discover_spec
from moequant.report.spec import spec_from_dict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    ppl = {("fp16", 16): 10.0, ("rtn", 4): 12.0, ("rtn", 3): 20.0, ("mq", 4): 11.0}
    for (method, bits), value in ppl.items():
        kld = None if method == "fp16" else value / 100
        _write(root / "m" / "eval" / f"{method}-w{bits}" / "ppl-wiki.json", {"ppl": value, "kld": kld, "top1_agree": 0.9})
    lm_eval_style = {"results": {"boolq": {"acc,none": 0.75, "acc_stderr,none": 0.01}, "gsm8k": {"exact_match,strict": 0.25}}}
    _write(root / "m" / "eval" / "fp16-w16" / "tasks.json", lm_eval_style)
    headline = {"summary": {"boolq": 0.5, "gsm8k": 0.5}, "results": {"boolq": {"acc,none": 0.1}}}
    _write(root / "m" / "eval" / "mq-w4" / "tasks.json", headline)
    usage = [[0.5, 0.25, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25]]
    _write(root / "m" / "calib" / "ebss.summary.json", {"sigma": 0.0123, "per_layer_usage": usage})
    return root


def _spec(**table_overrides):
    table = {"name": "t4", "title": "W4", "bits": 4, "methods": ["fp16", "rtn", "mq"], "ppl": ["wiki"], "tasks": ["boolq", "gsm8k"]}
    table.update(table_overrides)
    return spec_from_dict(
        {
            "models": {"m": {"label": "Model-M"}},
            "methods": {
                "fp16": {"label": "FP", "bits": [16]},
                "rtn": {"label": "RTN", "bits": [4, 3]},
                "mq": {"label": "MoEQuant++", "calibration": "ebss", "bits": [4]},
            },
            "calibration": {"ebss": {"label": "EBSS"}},
            "tables": [table],
            "plots": {"ppl_dataset": "wiki"},
        }
    )


def test_table_values_in_the_papers_layout(results, tmp_path):
    out = tmp_path / "tables"
    build_report(results, out, _spec(kl=["wiki"], sigma=True))
    frame = pd.read_csv(out / "t4.csv")
    assert list(frame.columns) == [
        "Model", "Method", "Calib", "σ", "distinct-4", "rep. span", "wiki", "KL wiki",
        "boolq", "boolq ±", "gsm8k", "gsm8k ±", "AVG", "AVG ±",
    ]
    assert list(frame["Method"]) == ["FP", "RTN", "MoEQuant++"]
    fp, rtn, mq = frame.to_dict("records")
    assert fp["wiki"] == 10.0 and rtn["wiki"] == 12.0 and mq["wiki"] == 11.0
    assert fp["boolq"] == 75.0 and fp["gsm8k"] == 25.0 and fp["AVG"] == 50.0
    assert fp["boolq ±"] == 1.0 and math.isnan(fp["gsm8k ±"]) and math.isnan(fp["AVG ±"]), "lm-eval's stderr, in points"
    assert mq["AVG"] == 50.0 and mq["σ"] == pytest.approx(0.0123) and mq["Calib"] == "EBSS"
    assert math.isnan(rtn["boolq"]) and math.isnan(rtn["AVG"]), "a missing result is missing, not zero"
    assert mq["KL wiki"] == pytest.approx(0.11)


def test_markdown_prints_model_once_and_dashes_for_missing(results, tmp_path):
    out = tmp_path / "tables"
    build_report(results, out, _spec())
    lines = (out / "t4.md").read_text().splitlines()
    assert lines[0] == "### W4"
    assert lines[2] == "| Model | Method | wiki | boolq | gsm8k | AVG |"
    assert lines[4] == "| Model-M | FP | 10.00 | 75.00 ± 1.00 | 25.00 | 50.00 |"
    assert lines[5] == "|  | RTN | 12.00 | – | – | – |"
    assert (out / "tables.md").read_text().startswith("### W4")


def test_plots_and_long_results(results, tmp_path):
    out = tmp_path / "tables"
    build_report(results, out, _spec())
    for name in ("ppl_vs_bits-m.png", "expert_usage-m.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    long = pd.read_csv(out / "results.csv")
    rtn_w3 = long[(long.method == "rtn") & (long.bits == 3) & (long.metric == "ppl")]
    assert rtn_w3["value"].tolist() == [20.0]
    assert long[long.metric == "sigma"]["value"].tolist() == [pytest.approx(0.0123)]


def test_discovered_spec_has_one_table_per_bit_width_with_the_fp_row(results):
    spec = discover_spec(results)
    assert [(t.name, t.bits) for t in spec.tables] == [("m_w4", 4), ("m_w3", 3)]
    assert spec.tables[1].methods == ["fp16", "rtn"]
    assert spec.tables[0].ppl == ["wiki"] and spec.tables[0].tasks == ["boolq", "gsm8k"]


def test_spec_naming_an_unknown_method_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown method 'gptq'"):
        _spec(methods=["fp16", "gptq"])


def test_cli_writes_tables_and_reports_bad_input_in_one_line(results, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["tables", "--results", str(results), "--out", str(out)]) == 0
    assert (out / "m_w4.md").is_file() and (out / "m_w3.csv").is_file()
    assert main(["tables", "--results", str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_corrupt_result_file_names_the_file(results, tmp_path):
    (results / "m" / "eval" / "rtn-w4" / "ppl-wiki.json").write_text("{not json")
    with pytest.raises(UsageError, match="rtn-w4/ppl-wiki.json"):
        build_report(results, tmp_path / "tables", _spec())


def test_the_task_average_carries_the_errors_of_its_tasks(tmp_path):
    root = tmp_path / "results"
    _write(root / "m" / "eval" / "fp16-w16" / "ppl-wiki.json", {"ppl": 10.0})
    both = {"results": {"boolq": {"acc,none": 0.75, "acc_stderr,none": 0.03}, "gsm8k": {"acc,none": 0.25, "acc_stderr,none": 0.04}}}
    _write(root / "m" / "eval" / "fp16-w16" / "tasks.json", both)
    out = tmp_path / "tables"
    build_report(root, out, _spec(methods=["fp16"]))
    (fp,) = pd.read_csv(out / "t4.csv").to_dict("records")
    assert fp["AVG"] == 50.0 and fp["AVG ±"] == pytest.approx(2.5), "sqrt(3² + 4²) / 2"
    assert "| 50.00 ± 2.50 |" in (out / "t4.md").read_text()


def test_a_seeded_method_is_one_row_of_means_with_the_spread_over_seeds(tmp_path):
    root = tmp_path / "results"
    for seed, (ppl, sigma) in enumerate([(11.0, 0.01), (12.0, 0.02), (13.0, 0.03)]):
        _write(root / "m" / "eval" / f"mq.seed{seed}-w4" / "ppl-wiki.json", {"ppl": ppl, "kld": ppl / 100})
        _write(root / "m" / "calib" / f"ebss.seed{seed}.summary.json", {"sigma": sigma})
    _write(root / "m" / "eval" / "fp16-w16" / "ppl-wiki.json", {"ppl": 10.0})
    runs = {f"mq.seed{s}": {"label": f"MoEQuant++ (seed {s})", "calibration": f"ebss.seed{s}", "bits": [4]} for s in range(3)}
    spec = spec_from_dict(
        {
            "models": {"m": {"label": "Model-M"}},
            "methods": {"fp16": {"label": "FP", "bits": [16]}, "mq": {"label": "MoEQuant++", "calibration": "ebss", "bits": [4]}, **runs},
            "calibration": {"ebss": {"label": "EBSS", "source": "ebss"}, **{f"ebss.seed{s}": {"source": "ebss"} for s in range(3)}},
            "tables": [{"name": "t", "title": "W4", "bits": 4, "methods": ["fp16", "mq"], "ppl": ["wiki"], "kl": ["wiki"], "sigma": True}],
            "seed_groups": {"methods": {"mq": list(runs)}, "calibration": {"ebss": [f"ebss.seed{s}" for s in range(3)]}},
        }
    )
    out = tmp_path / "tables"
    build_report(root, out, spec)
    fp, mq = pd.read_csv(out / "t.csv").to_dict("records")
    assert fp["Method"] == "FP" and math.isnan(fp.get("wiki ±", math.nan))
    assert mq["Method"] == "MoEQuant++, 3 seeds" and mq["Calib"] == "EBSS"
    assert mq["wiki"] == pytest.approx(12.0) and mq["wiki ±"] == pytest.approx(1.0), "sample standard deviation"
    assert mq["σ"] == pytest.approx(0.02) and mq["σ ±"] == pytest.approx(0.01)
    assert "| MoEQuant++, 3 seeds | EBSS | 0.0200 ± 0.0100 |" in (out / "t.md").read_text()
    findings = (out / "findings.md").read_text()
    assert "means over 3 calibration seeds" in findings
