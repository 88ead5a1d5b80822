"""The shipped configs build their DAGs, the schema rejects bad keys in one line, lint is clean."""

from __future__ import annotations

import pytest
import yaml

from tests.workflow.harness import REPO, copy_workflow, fake_cli_env, planned_jobs, snakemake


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("config") / "repo")
    return root, fake_cli_env(root.parent / "bin")


def test_default_config_plans_every_table1_method_at_w4_and_w3(workflow):
    root, env = workflow
    jobs = planned_jobs(snakemake(root, env, "-n"))
    assert jobs["build_demo"] == 1 and jobs["rotate"] == 1 and jobs["tables"] == 1
    assert jobs["calibrate"] == 6  # EBSS, EBSS with the repetition block, mixed / prose / code / math windows
    # six quantizing methods at W4 and W3; at W3 six calibration-ablation runs and two Table 5 ones
    assert jobs["quantize"] == 6 * 2 + 6 + 2


def test_default_config_evaluates_each_model_once_for_all_held_out_texts(workflow):
    root, env = workflow
    result = snakemake(root, env, "-n", "--printshellcmds")
    jobs = planned_jobs(result)
    assert jobs["evaluate"] == 1 + 6 * 2  # fp and every tabled method: perplexity and tasks in one job
    assert jobs["eval_ppl"] == 8  # the ablation runs are in no task table
    assert "eval_tasks" not in jobs
    lines = result.stdout.splitlines()
    ppl_commands = [line for line in lines if "moequant eval-ppl" in line or "moequant evaluate" in line]
    assert len(ppl_commands) == jobs["evaluate"] + jobs["eval_ppl"]
    for command in ppl_commands:
        assert all(f"--dataset {name}=text:" in command for name in ("prose", "code", "math", "mixed")), command
        assert "--max-windows 48" in command and "--batch-size 8" in command and "ppl-{dataset}.json" in command
    for command in (line for line in lines if "moequant evaluate" in line):
        assert "--tasks-batch-size 32" in command and "--include-path results/demo/tasks" in command, command
        assert "/tasks.json" in command.split("--tasks-out")[1], command
    assert any("moequant make-tasks" in line and "--docs 200" in line for line in lines)


def test_a_file_outside_the_tables_still_has_its_own_rule(workflow):
    root, env = workflow
    target = "results/demo/eval/moequant++_prose-w3/tasks.json"
    jobs = planned_jobs(snakemake(root, env, "-n", target))
    assert jobs.get("eval_tasks") == 1 and "evaluate" not in jobs, jobs


def test_paper_config_plans_three_models_without_building_a_demo(workflow):
    root, env = workflow
    jobs = planned_jobs(snakemake(root, env, "-n", "--configfile", "config/paper.yaml"))
    assert "build_demo" not in jobs and "make_tasks" not in jobs
    assert jobs["rotate"] == 3


def test_seeds_config_plans_each_calibrated_w3_method_once_per_seed(workflow):
    root, env = workflow
    jobs = planned_jobs(snakemake(root, env, "-n", "--configfile", "config/seeds.yaml"))
    assert jobs["calibrate"] == 2 * 3 and jobs["rotate"] == 1 and jobs["build_demo"] == 1
    assert jobs["quantize"] == 1 + 7 * 3  # RTN once, seven calibrated methods under three seeds
    assert jobs["eval_ppl"] == 2 + 7 * 3


def _evaluate_resources(result):
    """The distinct `resources:` lines of the planned evaluate jobs."""
    lines = [line for block in result.stdout.split("rule evaluate:")[1:] for line in block.splitlines()[:8]]
    return {line.split("resources:")[1].strip() for line in lines if "resources:" in line}


def test_evaluate_jobs_sum_both_runtimes_unless_configured(workflow):
    root, env = workflow
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    summed = _evaluate_resources(snakemake(root, env, "-n", "--configfile", "config/paper.yaml"))
    assert all("runtime=960" in r and "mem_mb=200000" in r for r in summed), summed
    assert {g for r in summed for g in ("gpu=1", "gpu=4") if g in r} == {"gpu=1", "gpu=4"}, "Mixtral's gpus: 4"
    paper["resources"]["evaluate"] = {"runtime": 600}
    (root / "config" / "paper_capped.yaml").write_text(yaml.safe_dump(paper))
    capped = _evaluate_resources(snakemake(root, env, "-n", "--configfile", "config/paper_capped.yaml"))
    assert all("runtime=600" in r and "mem_mb=200000" in r for r in capped), capped


def _write_config(root, name, edit):
    config = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    edit(config)
    path = root / "config" / name
    path.write_text(yaml.safe_dump(config))
    return f"config/{name}"


def _error_lines(result):
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("config ")]


def test_unknown_key_is_one_clear_line(workflow):
    root, env = workflow
    path = _write_config(root, "typo.yaml", lambda c: c["methods"]["rtn"].update(algoritm="rtn"))
    result = snakemake(root, env, "-n", "--configfile", path)
    assert result.returncode != 0
    assert _error_lines(result) == [
        "config methods.rtn: unknown key 'algoritm' (allowed: algorithm, bits, calibration, label, options, rotation)"
    ]


def test_bad_value_names_the_allowed_ones(workflow):
    root, env = workflow
    path = _write_config(root, "bits.yaml", lambda c: c.update(bits=[5]))
    result = snakemake(root, env, "-n", "--configfile", path)
    assert result.returncode != 0
    assert _error_lines(result) == ["config bits.0: 5 is not one of 2, 3, 4, 8"]


def test_dangling_reference_is_one_clear_line(workflow):
    root, env = workflow
    path = _write_config(root, "ref.yaml", lambda c: c["methods"]["moequant++"].update(calibration="wiki"))
    result = snakemake(root, env, "-n", "--configfile", path)
    assert result.returncode != 0
    assert _error_lines(result) == ["config methods.moequant++.calibration: unknown set 'wiki' (defined: ebss, mixed)"]


def test_lint_is_clean(workflow):
    root, env = workflow
    result = snakemake(root, env, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_default_baselines_follow_the_papers_protocol():
    """Baselines calibrate on one domain (the demo's WikiText2) and are judged on every domain."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for method in ("gptq", "awq", "quarot_gptq"):
        calibration = config["methods"][method]["calibration"]
        assert config["calibration"][calibration]["source"] == "text:{data}/prose/train.txt", method
    for table in ("table1_w4", "table9_w3", "table5_ablation_w3"):
        assert config["tables"][table]["ppl"] == ["prose", "code", "math", "mixed"]
    ablation = config["tables"]["calibration_ablation"]["methods"]
    assert "moequant++_mixed" in ablation and ablation[-1] == "moequant++"
