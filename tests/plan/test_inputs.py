"""What each stage reads: the names its command line gets and the files Snakemake tracks."""

from __future__ import annotations

from pathlib import Path

from moequant.plan.inputs import local_text_files
from moequant.plan.workflow import Plan


def test_demo_model_is_both_a_name_and_a_file(load_config) -> None:
    plan = Plan(load_config("test"), "results")
    assert plan.inputs.base_model("demo") == "results/demo/model"
    assert plan.inputs.base_model_files("demo") == ["results/demo/model"]


def test_a_hub_id_is_a_name_but_no_file_while_a_model_folder_is_both(load_config, tmp_path: Path) -> None:
    config = load_config("paper")
    config["models"]["local"] = {"hf": str(tmp_path), "trust_remote_code": False, "rotation_seed": 0}
    plan = Plan(config, "results")
    assert plan.inputs.base_model("mixtral_8x7b") == "mistralai/Mixtral-8x7B-v0.1"
    assert plan.inputs.base_model_files("mixtral_8x7b") == []
    assert plan.inputs.base_model_files("local") == [str(tmp_path)]


def test_the_model_under_test_is_the_original_for_fp_and_the_checkpoint_otherwise(load_config) -> None:
    plan = Plan(load_config("test"), "results")
    assert plan.inputs.model_under_test("demo", "fp16", 16) == "results/demo/model"
    assert plan.inputs.model_under_test("demo", "rtn", "4") == "results/demo/quant/rtn-w4"
    assert plan.inputs.model_under_test_files("demo", "rtn", 4) == ["results/demo/quant/rtn-w4"]


def test_quantize_reads_the_rotated_model_and_its_calibration_set(load_config) -> None:
    plan = Plan(load_config("test"), "results")
    assert plan.inputs.quantize_source("demo", "moequant++") == "results/demo/rotated"
    assert plan.inputs.quantize_source("demo", "rtn") == "results/demo/model"
    assert plan.inputs.quantize("demo", "moequant++") == ["results/demo/rotated", "results/demo/calib/ebss.jsonl"]
    assert plan.inputs.quantize("demo", "rtn") == ["results/demo/model"]


def test_a_local_text_source_is_an_input_unless_it_lies_in_the_demo() -> None:
    assert local_text_files("text:corpus/prose.txt") == ["corpus/prose.txt"]
    assert local_text_files("text:{data}/prose/train.txt") == []
    assert local_text_files("wikitext2") == []


def test_evaluation_inputs(load_config) -> None:
    config = load_config("config")
    config["evaluation"]["ppl"]["datasets"]["own"] = "text:corpus/own.txt"
    plan = Plan(config, "results")
    assert plan.inputs.calibrate("demo", "prose") == ["results/demo/model"]
    assert plan.inputs.eval_ppl("demo", "rtn", 3) == ["corpus/own.txt", "results/demo/model", "results/demo/quant/rtn-w3"]
    assert plan.inputs.eval_ppl("demo", "fp16", 16) == ["corpus/own.txt", "results/demo/model"]
    assert plan.inputs.task_folder("demo") == "results/demo/tasks"
    assert plan.inputs.eval_tasks("demo", "rtn", 3) == ["results/demo/quant/rtn-w3", "results/demo/tasks"]
    assert plan.inputs.evaluate("demo", "rtn", 3) == [
        "corpus/own.txt",
        "results/demo/model",
        "results/demo/quant/rtn-w3",
        "results/demo/tasks",
    ]


def test_no_task_section_means_no_task_folder(load_config) -> None:
    plan = Plan(load_config("test"), "results")
    assert plan.inputs.task_folder("demo") is None
    assert plan.inputs.eval_tasks("demo", "rtn", 4) == ["results/demo/quant/rtn-w4"]
