"""Each stage's argument string, exactly: the rules' params, so any change reruns jobs."""

from __future__ import annotations

import pytest

from moequant.plan.arguments import option_flags
from moequant.plan.workflow import Plan

DEMO_TEXT = "text:results/demo/model/data"


@pytest.fixture
def test_plan(load_config) -> Plan:
    return Plan(load_config("test"), "results")


@pytest.fixture
def default_plan(load_config) -> Plan:
    return Plan(load_config("config"), "results")


def test_option_flags_spell_keys_as_flags_and_quote_values() -> None:
    assert option_flags({"groupsize": 128, "act_order": True, "sym": False, "note": "a b"}) == [
        "--act-order",
        "--groupsize",
        "128",
        "--note",
        "'a b'",
    ]
    assert option_flags({}) == []


def test_demo_and_rotate(test_plan: Plan, load_config) -> None:
    assert test_plan.args.demo("demo") == "--family mixtral --seed 0 --steps 4 --tiny --quiet"
    assert Plan(load_config("config"), "results").args.demo("demo") == "--family mixtral --seed 0 --quiet"
    assert test_plan.args.rotate("demo") == "--seed 0"


def test_calibrate_resolves_demo_data_and_adds_ebss_knobs(test_plan: Plan) -> None:
    assert test_plan.args.calibrate("demo", "ebss") == "--source ebss --nsamples 2 --seqlen 16 --seed 0 --tau 1.2 --width 2"
    assert test_plan.args.calibrate("demo", "mixed") == f"--source {DEMO_TEXT}/mixed/train.txt --nsamples 2 --seqlen 16 --seed 0"


def test_quantize_names_algorithm_width_calibration_and_options(default_plan: Plan, test_plan: Plan) -> None:
    assert test_plan.args.quantize("demo", "rtn", "4") == "--algo rtn --wbits 4"
    assert default_plan.args.quantize("demo", "moequant++_all_experts", 3) == (
        "--algo agq --wbits 3 --calib results/demo/calib/prose.jsonl --act-order --all-experts"
    )


def test_eval_ppl_measures_every_dataset_against_the_fp_reference(test_plan: Plan, default_plan: Plan) -> None:
    dataset = f"--dataset mixed={DEMO_TEXT}/mixed/test.txt"
    assert test_plan.args.eval_ppl("demo", "fp16") == f"{dataset} --seqlen 32 --batch-size 1"
    assert test_plan.args.eval_ppl("demo", "rtn") == f"{dataset} --seqlen 32 --batch-size 1 --reference results/demo/model"
    assert test_plan.args.eval_ppl_out("demo", "rtn", 4) == "'results/demo/eval/rtn-w4/ppl-{dataset}.json'"
    datasets = " ".join(f"--dataset {name}={DEMO_TEXT}/{name}/test.txt" for name in ("prose", "code", "math", "mixed"))
    assert default_plan.args.eval_ppl("demo", "fp16") == f"{datasets} --seqlen 256 --batch-size 8 --max-windows 48"


def test_tasks_alone_and_inside_evaluate(default_plan: Plan) -> None:
    tasks = "--tasks demo_word_prose,demo_word_code,demo_word_math,demo_next_math,demo_cloze_math"
    assert default_plan.args.eval_tasks("demo") == f"{tasks} --include-path results/demo/tasks --batch-size 32"
    assert default_plan.args.evaluate("demo", "awq", 3) == (
        f"{default_plan.args.eval_ppl('demo', 'awq')} --ppl-out 'results/demo/eval/awq-w3/ppl-{{dataset}}.json' "
        f"{tasks} --include-path results/demo/tasks --tasks-batch-size 32 --tasks-out results/demo/eval/awq-w3/tasks.json"
    )


def test_remote_code_models_say_so_to_every_stage_that_loads_them(load_config) -> None:
    plan = Plan(load_config("paper"), "results")
    model = next(name for name, entry in plan.config["models"].items() if entry.get("trust_remote_code"))
    method = next(name for name, entry in plan.config["methods"].items() if entry["calibration"] is not None)
    calib = plan.config["methods"][method]["calibration"]
    for args in (
        plan.args.rotate(model),
        plan.args.calibrate(model, calib),
        plan.args.quantize(model, method, 4),
        plan.args.eval_ppl(model, method),
        plan.args.eval_tasks(model),
    ):
        assert args.endswith(" --trust-remote-code"), args
    assert plan.args.evaluate(model, method, 4).count("--trust-remote-code") == 1


def test_a_streamed_model_quantizes_with_stream(load_config) -> None:
    paper_plan = Plan(load_config("paper"), "results")
    assert paper_plan.args.quantize("mixtral_8x7b", "gptq", 4).split()[-1] == "--stream"
    assert paper_plan.args.rotate("mixtral_8x7b") == "--seed 0 --stream"
    assert "--stream" not in paper_plan.args.quantize("qwen_moe_14b", "gptq", 4).split()


def test_a_model_given_several_gpus_is_spread_over_them(load_config) -> None:
    paper_plan = Plan(load_config("paper"), "results")
    assert paper_plan.args.calibrate("mixtral_8x7b", "ebss").endswith("--device all")
    assert "--device all" in paper_plan.args.eval_ppl("mixtral_8x7b", "gptq")
    assert "--device all" in paper_plan.args.eval_tasks("mixtral_8x7b")
    assert "--device all" in paper_plan.args.evaluate("mixtral_8x7b", "gptq", 4)
    assert "--device" not in paper_plan.args.eval_ppl("qwen_moe_14b", "gptq")
    assert paper_plan.resources.gpus("eval_ppl", "mixtral_8x7b") == 4
    assert paper_plan.resources.gpus("evaluate", "mixtral_8x7b") == 4
    assert paper_plan.resources.gpus("eval_ppl", "qwen_moe_14b") == 1


def test_calibrate_passes_the_repetition_block(load_config) -> None:
    config = load_config("test")
    config["calibration"]["ebss"]["no_repeat_ngram"] = 4
    assert Plan(config, "results").args.calibrate("demo", "ebss").endswith("--tau 1.2 --width 2 --no-repeat-ngram 4")
