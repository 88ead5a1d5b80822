"""Rerun only what changed: code versions and per-stage params decide, proven by dry runs.

Each test starts from a finished run of config/test.yaml (fake CLI), changes one thing,
and asks `snakemake -n` which jobs it would run.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import yaml

from tests.workflow.harness import planned_jobs, planned_outputs, snakemake

TEST_CONFIG = ("--configfile", "config/test.yaml")


def _edit_module(root: Path, module: str) -> None:
    """Edit one package module the way a developer would: change its source."""
    with open(root / "moequant" / module, "a") as handle:
        handle.write("\n# edited by a test\n")


def _edit_config(root: Path, edit) -> None:
    path = root / "config" / "test.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_finished_run_is_up_to_date(run_copy):
    root, env = run_copy
    assert planned_jobs(snakemake(root, env, "-n", *TEST_CONFIG)) == {}
    for name in ("main.csv", "main.md", "calibration.md", "tables.md", "ppl_vs_bits-demo.png", "expert_usage-demo.png"):
        assert (root / "results" / "tables" / name).stat().st_size > 0


def test_quantization_code_reruns_quantize_and_downstream_only(run_copy):
    root, env = run_copy
    _edit_module(root, "quant/gptq.py")
    result = snakemake(root, env, "-n", *TEST_CONFIG)
    assert planned_jobs(result) == {"quantize": 2, "eval_ppl": 2, "tables": 1, "all": 1}
    assert "Code has changed since last execution" in result.stdout + result.stderr or "Params have changed" in (
        result.stdout + result.stderr
    )
    outputs = " ".join(planned_outputs(result))
    assert "fp16-w16" not in outputs, "the fp model's evaluation does not depend on quantization code"


def test_calibration_code_reruns_calibration_chain_but_not_rotation_or_rtn(run_copy):
    root, env = run_copy
    _edit_module(root, "calib/ebss.py")
    jobs = planned_jobs(snakemake(root, env, "-n", *TEST_CONFIG))
    assert jobs == {"calibrate": 1, "quantize": 1, "eval_ppl": 1, "tables": 1, "all": 1}


def test_calibration_records_rerun_every_quantization_and_nothing_upstream(run_copy):
    """quantize reads calibration tokens through calib/records.py: its code version must see it."""
    root, env = run_copy
    _edit_module(root, "calib/records.py")
    result = snakemake(root, env, "-n", *TEST_CONFIG)
    assert planned_jobs(result) == {"calibrate": 1, "quantize": 2, "eval_ppl": 2, "tables": 1, "all": 1}
    outputs = " ".join(planned_outputs(result))
    assert "rtn-w4" in outputs and "fp16-w16" not in outputs and "rotated" not in outputs


def test_one_method_option_reruns_only_that_method(run_copy):
    root, env = run_copy
    _edit_config(root, lambda c: c["methods"]["rtn"].setdefault("options", {}).update(groupsize=64))
    result = snakemake(root, env, "-n", *TEST_CONFIG)
    assert planned_jobs(result) == {"quantize": 1, "eval_ppl": 1, "tables": 1, "all": 1}
    outputs = planned_outputs(result)
    assert any("quant/rtn-w4" in out for out in outputs)
    assert not any("moequant++" in out for out in outputs)


def test_ebss_tau_reruns_ebss_and_the_methods_using_it(run_copy):
    root, env = run_copy
    _edit_config(root, lambda c: c["calibration"]["ebss"].update(tau=1.3))
    result = snakemake(root, env, "-n", *TEST_CONFIG)
    assert planned_jobs(result) == {"calibrate": 1, "quantize": 1, "eval_ppl": 1, "tables": 1, "all": 1}
    assert any("calib/ebss.jsonl" in out for out in planned_outputs(result))


def test_report_code_reruns_tables_only(run_copy):
    root, env = run_copy
    _edit_module(root, "report/tables.py")
    assert planned_jobs(snakemake(root, env, "-n", *TEST_CONFIG)) == {"tables": 1, "all": 1}


def test_failed_job_leaves_no_output_and_fails_the_run(run_copy):
    root, env = run_copy
    target = root / "results" / "demo" / "eval" / "rtn-w4" / "ppl-mixed.json"
    target.unlink()
    (root / "results" / "tables" / "main.csv").unlink()  # so the run needs the deleted result again
    result = snakemake(root, {**env, "FAKE_MOEQUANT_FAIL": "eval-ppl"}, *TEST_CONFIG)
    assert result.returncode != 0
    assert "Error in rule eval_ppl" in result.stdout + result.stderr
    assert not target.exists(), "the half-written output of a failed job must be removed"
    assert planned_jobs(snakemake(root, env, "-n", *TEST_CONFIG)) == {"eval_ppl": 1, "tables": 1, "all": 1}


def test_html_report_holds_the_tables_and_plots(run_copy):
    root, env = run_copy
    result = snakemake(root, env, *TEST_CONFIG, "--report", "report.zip")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    with zipfile.ZipFile(root / "report.zip") as archive:
        names = archive.namelist()
    for expected in ("main.csv", "calibration.csv", "ppl_vs_bits-demo.png", "expert_usage-demo.png"):
        assert any(name.endswith(expected) for name in names), (expected, names)
