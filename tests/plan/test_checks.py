"""A bad config is refused in one line per problem, naming the bad value and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from moequant.errors import UsageError
from moequant.plan.checks import check_references, check_schema, reference_problems, schema_problems
from tests.plan.conftest import SCHEMA


@pytest.fixture
def config(load_config) -> dict:
    """A fresh config/test.yaml for a test to break."""
    return load_config("test")


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def test_shipped_configs_have_no_problems(load_config, schema) -> None:
    for name in ("test", "config", "paper"):
        config = load_config(name)
        assert schema_problems(config, schema) == [] and reference_problems(config) == [], name


def test_schema_problems_name_the_key_and_what_is_allowed(config, schema) -> None:
    config["methods"]["rtn"]["algoritm"] = "rtn"
    config["bits"] = [5]
    config["models"]["hub"] = {"hf": "org/model", "demo": {"family": "mixtral"}}
    assert schema_problems(config, schema) == [
        "config bits.0: 5 is not one of 2, 3, 4, 8",
        "config methods.rtn: unknown key 'algoritm' (allowed: algorithm, bits, calibration, label, options, rotation)",
        "config models.hub: give exactly one of 'hf' (a Hugging Face id or model directory) or 'demo'",
    ]


def test_check_schema_reads_the_schema_file_and_raises_its_lines(config) -> None:
    config["tables"]["main"]["colour"] = "red"
    with pytest.raises(UsageError) as err:
        check_schema(config, SCHEMA)
    assert str(err.value) == "config tables.main: unknown key 'colour' (allowed: bits, kl, methods, models, ppl, sigma, tasks, title)"


def test_methods_must_fit_their_calibration(config) -> None:
    config["methods"]["fp16"]["calibration"] = "ebss"
    config["methods"]["gptq"] = {"algorithm": "gptq", "calibration": None, "rotation": False, "options": {}}
    config["methods"]["awq"] = {"algorithm": "awq", "calibration": "wiki", "rotation": False, "options": {}}
    assert reference_problems(config) == [
        "config methods.fp16: algorithm 'none' takes no calibration (got 'ebss')",
        "config methods.gptq: algorithm 'gptq' needs a calibration set",
        "config methods.awq.calibration: unknown set 'wiki' (defined: ebss, mixed)",
    ]


def test_no_calibration_defined_says_so(config) -> None:
    config["calibration"] = {}
    config["methods"] = {"fp16": config["methods"]["fp16"], "gptq": {"algorithm": "gptq", "calibration": "ebss"}}
    config["tables"] = {"t": {"title": "t", "methods": ["fp16"]}}
    assert reference_problems(config) == ["config methods.gptq.calibration: unknown set 'ebss' (defined: none defined)"]


def test_demo_data_with_hub_models_names_them(config) -> None:
    config["models"]["mixtral"] = {"hf": "mistralai/Mixtral-8x7B-v0.1"}
    config["evaluation"]["tasks"] = {"names": [], "include": "demo"}
    assert reference_problems(config) == [
        "config calibration.mixed.source: {data} exists only for demo models, not mixtral",
        "config evaluation.ppl.datasets.mixed: {data} exists only for demo models, not mixtral",
        "config evaluation.tasks.include: 'demo' tasks exist only for demo models, not mixtral",
    ]


def test_tables_must_name_defined_things(config) -> None:
    table = config["tables"]["main"]
    table.update(models=["ghost"], methods=["fp16", "nosuch", "rtn"], ppl=["wiki"], tasks=["hellaswag"])
    del table["bits"]
    config["plots"]["ppl_dataset"] = "c4"
    assert reference_problems(config) == [
        "config tables.main.models: unknown model 'ghost'",
        "config tables.main.methods: unknown method 'nosuch'",
        "config tables.main: needs 'bits' for its quantized method 'rtn'",
        "config tables.main.ppl: unknown dataset 'wiki' (defined: mixed)",
        "config tables.main.tasks: task 'hellaswag' is not in evaluation.tasks.names",
        "config plots.ppl_dataset: unknown dataset 'c4'",
    ]


def test_a_table_asks_only_for_widths_its_methods_run_at(config) -> None:
    config["tables"]["calibration"]["bits"] = 3
    config["evaluation"]["ppl"]["kl"] = False
    assert reference_problems(config) == [
        "config tables.main.kl: KL columns need evaluation.ppl.kl: true",
        "config tables.calibration: method 'moequant++' does not run at W3",
    ]


def test_check_references_raises_one_line_per_problem(config) -> None:
    config["methods"]["moequant++"]["calibration"] = "wiki"
    config["tables"]["main"]["kl"] = ["nope"]
    with pytest.raises(UsageError) as err:
        check_references(config)
    assert str(err.value).splitlines() == [
        "config methods.moequant++.calibration: unknown set 'wiki' (defined: ebss, mixed)",
        "config tables.main.kl: unknown dataset 'nope' (defined: mixed)",
    ]


def test_method_options_must_be_flags_of_their_algorithm(config) -> None:
    config["methods"]["rtn"]["options"] = {"groupsize": 64, "act_order": True}
    config["methods"]["moequant++"]["options"] = {"awq_alpha": 0.5, "groupsise": 64, "no_act_order": True}
    config["methods"]["fp16"]["options"] = {"groupsize": 64}
    problems = reference_problems(config)
    allowed = "asym, batch_size, clip, clip_grid, clip_maxshrink, clip_norm, device, dtype, expert_chunk, groupsize"
    assert [line.split(" (allowed: ")[0] for line in problems] == [
        "config methods.fp16: algorithm 'none' takes no options (got {'groupsize': 64})",
        "config methods.rtn.options: 'act_order' is an option of agq, gptq, not of algorithm 'rtn'",
        "config methods.moequant++.options: 'awq_alpha' is an option of agq_awq, awq, not of algorithm 'agq'",
        "config methods.moequant++.options: unknown key 'groupsise' for algorithm 'agq'",
    ]
    assert problems[1].endswith(f"(allowed: {allowed}, hessian_dtype, keep_router_fp, min_tokens, no_clip, "
                                "nsamples, quantize_router, scale_dtype, sym)")
    assert "agq_weight" in problems[2] and "damp" in problems[2]
