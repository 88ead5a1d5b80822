"""Calibration seeds: a seeded config runs each calibrated method once per seed, and nothing else changes."""

from __future__ import annotations

from moequant.plan.seeds import expand_seeds
from moequant.plan.workflow import Plan


def test_a_config_without_seeds_is_left_alone(load_config) -> None:
    config = load_config("config")
    assert expand_seeds(config).config is config


def test_seeded_config_runs_every_calibrated_method_once_per_seed(load_config) -> None:
    config = load_config("seeds")
    runs = expand_seeds(config)
    assert runs.methods["moequant++"] == ["moequant++.seed0", "moequant++.seed1", "moequant++.seed2"]
    assert "fp16" in runs.config["methods"] and "rtn" in runs.config["methods"] and "rtn" not in runs.methods
    assert runs.config["methods"]["gptq.seed2"]["calibration"] == "prose.seed2"
    assert {name: entry["seed"] for name, entry in runs.config["calibration"].items() if name.startswith("ebss")} == {
        "ebss.seed0": 0, "ebss.seed1": 1, "ebss.seed2": 2,
    }
    assert "moequant++" not in runs.config["methods"], "only the seeded runs are built"
    table = runs.config["tables"]["table5_ablation_w3_seeds"]
    assert table["methods"][:3] == ["quarot_gptq.seed0", "quarot_gptq.seed1", "quarot_gptq.seed2"]


def test_seeded_plan_builds_runs_and_reports_the_methods_as_written(load_config) -> None:
    plan = Plan(load_config("seeds"), "results/seeds")
    files = plan.targets.evaluation_files()
    assert "results/seeds/demo/eval/moequant++.seed1-w3/ppl-mixed.json" in files
    assert "results/seeds/demo/eval/rtn-w3/ppl-mixed.json" in files
    assert not any("/moequant++-w3/" in f for f in files)
    assert plan.args.calibrate("demo", "ebss.seed2").count("--seed 2") == 1
    spec = plan.targets.report_spec()
    assert spec["tables"][0]["methods"] == ["fp16", "rtn", "awq", "moequant+", "gptq", "quarot_gptq", "moequant++"]
    assert spec["methods"]["moequant++"]["calibration"] == "ebss" and spec["methods"]["moequant++.seed0"]["label"] == "MoEQuant++ (seed 0)"
    assert spec["seed_groups"]["calibration"]["prose"] == ["prose.seed0", "prose.seed1", "prose.seed2"]
