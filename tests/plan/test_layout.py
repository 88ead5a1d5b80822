"""One layout for the workflow that writes results and the report that reads them."""

from __future__ import annotations

from pathlib import Path

from moequant.code_version import import_closure, verb_module
from moequant.plan.layout import Layout, parse_variant, ppl_dataset, ppl_name, uses_demo_data
from moequant.report.layout import ResultsLayout
from tests.plan.conftest import REPO


def test_paths_below_the_results_folder_keep_its_spelling_and_wildcards() -> None:
    paths = Layout("./runs/")
    assert paths.model_dir("{model}") == "./runs/{model}/model"
    assert paths.data_dir("demo") == "./runs/demo/model/data"
    assert paths.rotated_dir("demo") == "./runs/demo/rotated"
    assert paths.calib_file("demo", "ebss") == "./runs/demo/calib/ebss.jsonl"
    assert paths.calib_summary("demo", "ebss") == "./runs/demo/calib/ebss.summary.json"
    assert paths.quant_dir("{model}", "{method}", "{bits}") == "./runs/{model}/quant/{method}-w{bits}"
    assert paths.tasks_dir("demo") == "./runs/demo/tasks"
    assert paths.spec_file() == "./runs/tables/spec.json"


def test_an_evaluation_key_names_the_same_folder_as_model_method_and_bits() -> None:
    paths = Layout("results")
    key = paths.evaluation_key("demo", "rtn", 4)
    assert key == "demo/eval/rtn-w4"
    assert paths.eval_dir("demo", "rtn", 4) == "results/demo/eval/rtn-w4"
    assert paths.ppl_file("demo", "rtn", 4, "mixed") == paths.evaluated_ppl_file(key, "mixed") == "results/demo/eval/rtn-w4/ppl-mixed.json"
    assert paths.tasks_file("demo", "rtn", 4) == paths.evaluated_tasks_file(key) == "results/demo/eval/rtn-w4/tasks.json"
    assert paths.evaluated_ppl_file("{evaluated}", "code") == "results/{evaluated}/ppl-code.json"


def test_logs_and_benchmarks_mirror_the_job() -> None:
    paths = Layout("results")
    assert paths.log("{model}", "eval", "{method}-w{bits}", "ppl") == "results/logs/{model}/eval/{method}-w{bits}/ppl.log"
    assert paths.benchmark("table_spec") == "results/benchmarks/table_spec.tsv"


def test_table_outputs_per_table_then_plots_per_model_then_summaries() -> None:
    assert Layout("r").table_outputs(["main"], ["demo", "big"]) == [
        "r/tables/main.csv",
        "r/tables/main.md",
        "r/tables/ppl_vs_bits-demo.png",
        "r/tables/expert_usage-demo.png",
        "r/tables/ppl_vs_bits-big.png",
        "r/tables/expert_usage-big.png",
        "r/tables/tables.md",
        "r/tables/results.csv",
        "r/tables/findings.md",
    ]


def test_names_parse_back() -> None:
    assert parse_variant("moequant++_prose-w3") == ("moequant++_prose", 3)
    assert parse_variant("fp16-w16") == ("fp16", 16)
    assert parse_variant("notes") is None and parse_variant("x-wide") is None
    assert ppl_dataset(ppl_name("wiki.test")) == "wiki.test"


def test_demo_data_is_expanded_per_model() -> None:
    paths = Layout("results")
    assert paths.resolve_source("text:{data}/prose/train.txt", "demo") == "text:results/demo/model/data/prose/train.txt"
    assert paths.resolve_source("wikitext2", "demo") == "wikitext2"
    assert uses_demo_data("text:{data}/x.txt") and not uses_demo_data("text:corpus/x.txt")


def test_the_report_finds_what_the_layout_places(tmp_path: Path) -> None:
    paths = Layout(str(tmp_path))
    for file in (
        paths.ppl_file("demo", "rtn", 4, "mixed"),
        paths.ppl_file("demo", "rtn", 4, "code"),
        paths.tasks_file("demo", "fp16", 16),
        paths.calib_summary("demo", "ebss"),
        paths.ppl_file("m[1]", "gptq", 3, "prose"),
    ):
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        Path(file).write_text("{}")
    Path(paths.evaluations_dir("demo"), "notes").mkdir()
    layout = ResultsLayout(tmp_path)
    assert layout.models() == ["demo", "m[1]"]
    assert layout.variants("demo") == [("fp16", 16), ("rtn", 4)]
    assert layout.variants("m[1]") == [("gptq", 3)], "a folder name is not a glob pattern"
    assert layout.ppl_datasets("demo", "rtn", 4) == ["code", "mixed"]
    assert layout.calibration_sets("demo") == ["ebss"]
    assert layout.tasks_file("demo", "fp16", 16) == tmp_path / "demo" / "eval" / "fp16-w16" / "tasks.json"


def test_only_the_layout_joins_the_code_version_of_the_stage_that_reads_it() -> None:
    """Editing a path reruns the tables; editing an argument string or a check does not."""
    def plan_files(verb: str) -> list[str]:
        closure = import_closure(REPO, ["moequant.cli", verb_module(REPO, verb)])
        return [str(path.relative_to(REPO)) for path in closure if path.parent.name == "plan"]

    assert plan_files("tables") == ["moequant/plan/__init__.py", "moequant/plan/layout.py"]
    assert plan_files("quantize") == []
