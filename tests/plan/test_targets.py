"""A run builds what its tables and plots read, and hands `moequant tables` their layout."""

from __future__ import annotations

from moequant.plan.targets import report_entry
from moequant.plan.workflow import Plan


def test_table_needs_of_the_test_config(load_config) -> None:
    plan = Plan(load_config("test"), "results")
    assert plan.targets.table_needs() == {
        ("demo", "fp16", 16): {"ppl": {"mixed"}, "tasks": False},
        ("demo", "rtn", 4): {"ppl": {"mixed"}, "tasks": False},
        ("demo", "moequant++", 4): {"ppl": {"mixed"}, "tasks": False},
    }
    assert plan.targets.evaluation_files() == [
        "results/demo/eval/fp16-w16/ppl-mixed.json",
        "results/demo/eval/moequant++-w4/ppl-mixed.json",
        "results/demo/eval/rtn-w4/ppl-mixed.json",
    ]
    assert plan.targets.calibration_summaries() == ["results/demo/calib/ebss.summary.json"]
    assert plan.targets.evaluated_with_tasks == {}


def test_the_plot_reads_its_dataset_at_every_width_a_method_runs_at(load_config) -> None:
    config = load_config("test")
    config["bits"] = [4, 3]
    config["evaluation"]["ppl"]["datasets"]["code"] = "text:{data}/code/test.txt"
    config["plots"]["ppl_dataset"] = "code"
    needs = Plan(config, "results").targets.table_needs()
    assert needs[("demo", "rtn", 4)] == {"ppl": {"mixed", "code"}, "tasks": False}
    assert needs[("demo", "rtn", 3)] == {"ppl": {"code"}, "tasks": False}
    assert ("demo", "fp16", 3) not in needs


def test_task_tables_get_one_evaluate_job_per_variant(load_config) -> None:
    plan = Plan(load_config("config"), "results")
    evaluated = plan.targets.evaluated_with_tasks
    assert len(evaluated) == 13
    assert plan.targets.evaluated("demo/eval/fp16-w16") == ("demo", "fp16", 16)
    assert evaluated["demo/eval/moequant++-w3"] == ("demo", "moequant++", 3)
    assert "results/demo/eval/awq-w4/tasks.json" in plan.targets.evaluation_files()


def test_table_outputs_and_spec(load_config) -> None:
    plan = Plan(load_config("test"), "results")
    assert plan.targets.table_outputs()[:4] == [
        "results/tables/main.csv",
        "results/tables/main.md",
        "results/tables/calibration.csv",
        "results/tables/calibration.md",
    ]
    spec = plan.targets.report_spec()
    assert spec["models"] == {"demo": {"label": "demo"}}
    assert spec["methods"]["fp16"] == {
        "label": "FP",
        "calibration": None,
        "bits": [16],
        "rotation": False,
        "algorithm": "none",
        "all_experts": False,
    }
    assert spec["methods"]["moequant++"]["bits"] == [4] and spec["methods"]["moequant++"]["rotation"] is True
    assert spec["calibration"]["mixed"] == {"label": "mixed", "source": "text:{data}/mixed/train.txt"}
    assert [table["name"] for table in spec["tables"]] == ["main", "calibration"]
    assert spec["tables"][1]["sigma"] is True
    assert spec["plots"] == {"ppl_dataset": "mixed"}


def test_report_entries_caption_tables_and_plots_only() -> None:
    assert report_entry("results/tables/main.csv") == {"caption": "../report/table.rst", "category": "Tables", "labels": {"table": "main"}}
    assert report_entry("results/tables/ppl_vs_bits-demo.png") == {
        "caption": "../report/ppl_vs_bits.rst",
        "category": "Plots",
        "labels": {"plot": "ppl_vs_bits-demo"},
    }
    assert report_entry("results/tables/expert_usage-demo.png")["caption"] == "../report/expert_usage.rst"
    assert report_entry("results/tables/results.csv") is None
    assert report_entry("results/tables/main.md") is None
