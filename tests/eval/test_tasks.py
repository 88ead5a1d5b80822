"""lm-eval on the in-memory model: local tasks, model directories and quantized checkpoints."""

from __future__ import annotations

import json

import pytest

from moequant.cli import main
from moequant.eval.config import LocalTaskConfig, PerplexityConfig, TaskConfig
from moequant.eval.lm_eval_bridge import prepare_tasks, run_tasks
from moequant.eval.local_tasks import write_local_tasks
from moequant.eval.perplexity import measure_perplexity

LEAVES = [f"demo_{kind}_{domain}" for kind in ("next", "cloze", "word") for domain in ("code", "math", "prose")]
LIMIT = "4"


@pytest.fixture(scope="module")
def task_dir(held_out_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks") / "demo-tasks"
    write_local_tasks(held_out_dir, out, LocalTaskConfig(docs_per_task=6))
    return out


@pytest.fixture(scope="module")
def in_memory(model, tokenizer, task_dir):
    config = TaskConfig(tasks=["demo"], include_path=str(task_dir), limit=float(LIMIT))
    return run_tasks(model, tokenizer, prepare_tasks(config), config)


def _eval_tasks(model_spec, task_dir, out, *extra) -> dict:
    argv = ["eval-tasks", "--model", str(model_spec), "--tasks", "demo", "--include-path", str(task_dir)]
    assert main([*argv, "--limit", LIMIT, "--device", "cpu", "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_local_group_runs_on_the_in_memory_model(in_memory) -> None:
    results = in_memory["results"]
    for name in LEAVES:
        assert 0.0 <= results[name]["acc,none"] <= 1.0
        assert in_memory["n-samples"][name]["effective"] == int(LIMIT)
        assert in_memory["n-shot"][name] == 0
    leaf_mean = sum(results[name]["acc,none"] for name in LEAVES) / len(LEAVES)
    assert in_memory["avg"] == pytest.approx(leaf_mean) == pytest.approx(results["demo"]["acc,none"])
    assert in_memory["summary"]["demo"] == in_memory["avg"]


def test_every_task_records_its_score_per_document_and_they_average_to_the_headline(in_memory) -> None:
    documents = in_memory["documents"]
    assert set(LEAVES) <= set(documents)
    for name in LEAVES:
        entry = documents[name]
        assert entry["metric"] == "acc,none" and entry["doc_ids"] == list(range(int(LIMIT)))
        assert set(entry["scores"]) <= {0.0, 1.0}
        assert sum(entry["scores"]) / len(entry["scores"]) == pytest.approx(in_memory["results"][name]["acc,none"])
    assert "samples" not in in_memory, "the full logged samples (documents, prompts) stay out of tasks.json"


def test_few_shot_draws_from_the_validation_split(model, tokenizer, task_dir) -> None:
    config = TaskConfig(tasks=["demo_next_prose"], include_path=str(task_dir), num_fewshot=1, limit=2)
    output = run_tasks(model, tokenizer, prepare_tasks(config), config)
    assert output["n-shot"]["demo_next_prose"] == 1
    assert output["runs"] == [{"tasks": ["demo_next_prose"], "num_fewshot": 1, "config": output["runs"][0]["config"]}]


def test_an_unquantized_model_directory_evaluates_identically(model, tokenizer, model_dir, task_dir, text_file, in_memory, tmp_path) -> None:
    written = _eval_tasks(model_dir, task_dir, tmp_path / "tasks.json")
    assert written["results"] == in_memory["results"]
    assert written["model"]["quantized_checkpoint"] is False and written["lm_eval_version"]
    ppl_out = tmp_path / "ppl.json"
    argv = ["eval-ppl", "--model", str(model_dir), "--dataset", f"text:{text_file}", "--seqlen", "32"]
    assert main([*argv, "--max-windows", "5", "--device", "cpu", "--no-progress", "--out", str(ppl_out)]) == 0
    measured = json.loads(ppl_out.read_text())
    expected = measure_perplexity(model, tokenizer, PerplexityConfig(f"text:{text_file}", seqlen=32, max_windows=5), progress=False)
    assert measured["ppl"] == expected["ppl"] and measured["windows_sha256"] == expected["windows_sha256"]
    assert measured["config"]["seqlen"] == 32 and measured["moequant_version"]


def test_several_datasets_in_one_run_equal_one_run_each(model_dir, text_file, held_out_dir, tmp_path) -> None:
    datasets = {"stdlib": f"text:{text_file}", "prose": f"text:{held_out_dir}/prose/test.txt"}
    common = ["--model", str(model_dir), "--seqlen", "32", "--max-windows", "3", "--device", "cpu", "--no-progress"]
    flags = [arg for name, spec in datasets.items() for arg in ("--dataset", f"{name}={spec}")]
    assert main(["eval-ppl", *common, *flags, "--batch-size", "2", "--out", str(tmp_path / "ppl-{dataset}.json")]) == 0
    for name, spec in datasets.items():
        single = tmp_path / f"single-{name}.json"
        assert main(["eval-ppl", *common, "--dataset", spec, "--out", str(single)]) == 0
        together, alone = json.loads((tmp_path / f"ppl-{name}.json").read_text()), json.loads(single.read_text())
        assert together["name"] == name and together["dataset"] == spec == alone["dataset"]
        assert together["windows_sha256"] == alone["windows_sha256"]
        assert together["ppl"] == pytest.approx(alone["ppl"], rel=1e-5)


def test_evaluate_writes_what_eval_ppl_and_eval_tasks_write_separately(model_dir, task_dir, held_out_dir, tmp_path) -> None:
    reference = tmp_path / "reference"
    assert main(["quantize", "--model", str(model_dir), "--algo", "rtn", "--wbits", "3", "--device", "cpu", "--out", str(reference)]) == 0
    datasets = [arg for name in ("prose", "math") for arg in ("--dataset", f"{name}=text:{held_out_dir}/{name}/test.txt")]
    common = ["--model", str(model_dir), "--device", "cpu"]
    ppl_flags = [*datasets, "--seqlen", "32", "--max-windows", "3", "--reference", str(reference), "--no-progress"]
    combined = tmp_path / "combined"
    task_flags = ["--tasks", "demo", "--include-path", str(task_dir), "--limit", LIMIT, "--tasks-batch-size", "4"]
    argv = ["evaluate", *common, *ppl_flags, "--ppl-out", str(combined / "ppl-{dataset}.json"), *task_flags]
    assert main([*argv, "--tasks-out", str(combined / "tasks.json")]) == 0
    assert main(["eval-ppl", *common, *ppl_flags, "--out", str(tmp_path / "ppl-{dataset}.json")]) == 0
    for name in ("prose", "math"):
        together, alone = (json.loads((folder / f"ppl-{name}.json").read_text()) for folder in (combined, tmp_path))
        assert together["windows_sha256"] == alone["windows_sha256"]
        assert together["memory"]["peak_host_bytes"] > 0 and together["memory"]["peak_device_bytes"] is None
        assert together["ppl"] == pytest.approx(alone["ppl"], rel=1e-6) and together["kld"] == pytest.approx(alone["kld"], rel=1e-5)
    written = json.loads((combined / "tasks.json").read_text())
    alone = _eval_tasks(model_dir, task_dir, tmp_path / "tasks.json", "--batch-size", "4")
    assert written["results"] == alone["results"] and written["config"]["batch_size"] == 4


def test_a_local_task_runs_on_a_quantized_checkpoint_directory(model_dir, task_dir, text_file, tmp_path) -> None:
    pytest.importorskip("moequant.quant.checkpoint")
    checkpoint = tmp_path / "rtn-w3"
    argv = ["quantize", "--model", str(model_dir), "--algo", "rtn", "--wbits", "3", "--device", "cpu"]
    assert main([*argv, "--out", str(checkpoint)]) == 0
    written = _eval_tasks(checkpoint, task_dir, tmp_path / "tasks.json")
    assert written["model"]["quantized_checkpoint"] is True
    assert set(LEAVES) <= set(written["summary"]) and written["avg"] is not None
    ppl_out = tmp_path / "ppl.json"
    argv = ["eval-ppl", "--model", str(checkpoint), "--reference", str(model_dir), "--dataset", f"text:{text_file}"]
    assert main([*argv, "--seqlen", "32", "--max-windows", "4", "--device", "cpu", "--no-progress", "--out", str(ppl_out)]) == 0
    measured = json.loads(ppl_out.read_text())
    assert measured["kld"] > 0 and measured["top1_agree"] < 1
    assert measured["reference"]["quantized_checkpoint"] is False


def test_a_preset_runs_each_shot_count_once_and_averages_its_headline_metrics(model, tokenizer, task_dir, monkeypatch) -> None:
    from moequant.eval import lm_eval_bridge
    from moequant.eval.lm_eval_bridge import PAPER7, TaskRequest, resolve_requests

    assert [(r.name, r.num_fewshot) for r in resolve_requests(TaskConfig(tasks=["paper7"]))] == [
        ("mmlu", 5), ("humaneval", 0), ("gsm8k", 5), ("boolq", 0), ("hellaswag", 0), ("openbookqa", 0), ("mathqa", 0)
    ]
    assert [r.metric for r in PAPER7].count("acc,none") == 5
    preset = (
        TaskRequest("demo_next_prose", 1, "acc_norm,none"),
        TaskRequest("demo_cloze_math", 0, "acc,none"),
        TaskRequest("demo_next_code", 1, "acc,none"),
    )
    monkeypatch.setitem(lm_eval_bridge.PRESETS, "paper7", preset)
    config = TaskConfig(tasks=["paper7"], include_path=str(task_dir), limit=3)
    output = run_tasks(model, tokenizer, prepare_tasks(config), config)
    assert [(run["tasks"], run["num_fewshot"]) for run in output["runs"]] == [
        (["demo_next_prose", "demo_next_code"], 1),
        (["demo_cloze_math"], 0),
    ]
    assert output["n-shot"] == {"demo_next_prose": 1, "demo_next_code": 1, "demo_cloze_math": 0}
    results = output["results"]
    headline = [results["demo_next_prose"]["acc_norm,none"], results["demo_cloze_math"]["acc,none"], results["demo_next_code"]["acc,none"]]
    assert output["summary"]["demo_next_prose"] == headline[0]
    assert output["avg"] == pytest.approx(sum(headline) / 3)
