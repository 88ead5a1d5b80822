"""Bad input to the evaluation verbs: one line on stderr, exit code 2, before any model is loaded."""

from __future__ import annotations

import json

import pytest
import yaml

from moequant.cli import main


def _fails(argv: list[str], capsys, expected: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("moequant ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"moequant {argv[0]}: error: ") and expected in lines[0], lines[0]
    return lines[0]


def _local_task(folder, name: str, **fields) -> None:
    data = folder / f"{name}.jsonl"
    data.write_text(json.dumps({"context": "a", "choices": [" b", " c"], "label": 0}) + "\n")
    task = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        **fields,
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task))


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--dataset", "ptb"], "unknown dataset 'ptb'"),
        (["--dataset", "wikitext2", "--seqlen", "4096"], "seqlen 4096 exceeds the model's maximum positions (128)"),
        (["--dataset", "c4", "--batch-size", "0"], "batch_size must be at least 1"),
        (["--dataset", "text:/nonexistent/file.txt", "--seqlen", "32"], "does not exist"),
        (["--dataset", "a=c4", "--dataset", "b=wikitext2"], "must contain {dataset} when several --dataset"),
        (["--dataset", "a=c4", "--dataset", "a=wikitext2"], "dataset name 'a' is given twice"),
        (["--dataset", "b=ptb"], "unknown dataset 'ptb'"),
    ],
)
def test_eval_ppl_bad_input(model_dir, tmp_path, capsys, extra, expected) -> None:
    _fails(["eval-ppl", "--model", str(model_dir), *extra, "--out", str(tmp_path / "o.json")], capsys, expected)
    assert not (tmp_path / "o.json").exists()


def test_eval_ppl_missing_model(tmp_path, capsys) -> None:
    argv = ["eval-ppl", "--model", str(tmp_path / "nope"), "--dataset", "c4", "--out", str(tmp_path / "o.json")]
    _fails(argv, capsys, "does not exist")


def test_eval_ppl_reference_with_another_vocabulary(model_dir, text_file, tmp_path, capsys) -> None:
    from moequant.models.synthetic import tiny_model

    other = tmp_path / "other"
    tiny_model("mixtral", vocab_size=96).save_pretrained(other)
    argv = ["eval-ppl", "--model", str(model_dir), "--reference", str(other), "--dataset", f"text:{text_file}"]
    _fails([*argv, "--seqlen", "32", "--out", str(tmp_path / "o.json")], capsys, "KL needs the same vocabulary")


@pytest.mark.parametrize(
    "tasks, extra, expected",
    [
        ("demo", [], "pass --include-path TASKDIR"),
        ("paper7", ["--num-fewshot", "3"], "fixes the shots"),
        ("paper7,boolq", [], "runs alone"),
        ("boolq", ["--limit", "0"], "limit must be positive"),
        ("boolq", ["--include-path", "/nonexistent/tasks"], "is not a directory"),
    ],
)
def test_eval_tasks_bad_input(model_dir, tmp_path, capsys, tasks, extra, expected) -> None:
    argv = ["eval-tasks", "--model", str(model_dir), "--tasks", tasks, *extra, "--out", str(tmp_path / "o.json")]
    _fails(argv, capsys, expected)


def test_evaluate_checks_its_tasks_before_loading_the_model(model_dir, text_file, tmp_path, capsys) -> None:
    argv = ["evaluate", "--model", str(model_dir), "--dataset", f"text:{text_file}", "--seqlen", "32", "--tasks", "demo"]
    outs = ["--ppl-out", str(tmp_path / "p.json"), "--tasks-out", str(tmp_path / "t.json")]
    _fails([*argv, *outs], capsys, "pass --include-path TASKDIR")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--tasks-batch-size", "0"], "lm-eval tasks: batch_size must be at least 1"),
        (["--batch-size", "0"], "perplexity: batch_size must be at least 1"),
        (["--dataset", "c4", "--ppl-out", "p.json"], "--ppl-out 'p.json' must contain {dataset}"),
        (["--reference-device", "bogus"], "bogus"),
    ],
)
def test_evaluate_bad_input_names_its_half(model_dir, text_file, tmp_path, capsys, extra, expected) -> None:
    _local_task(tmp_path, "tiny_task")
    argv = ["evaluate", "--model", str(model_dir), "--dataset", f"text:{text_file}", "--seqlen", "32"]
    outs = ["--ppl-out", str(tmp_path / "p.json"), "--tasks-out", str(tmp_path / "t.json")]
    tasks = ["--tasks", "tiny_task", "--include-path", str(tmp_path)]
    _fails([*argv, *outs, *tasks, *extra], capsys, expected)
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "t.json").exists()


def test_code_executing_task_needs_explicit_consent(model_dir, tmp_path, capsys) -> None:
    _local_task(tmp_path, "runs_code", unsafe_code=True)
    argv = ["eval-tasks", "--model", str(model_dir), "--tasks", "runs_code", "--include-path", str(tmp_path)]
    _fails([*argv, "--out", str(tmp_path / "o.json")], capsys, "pass --allow-code-execution")


def test_task_dataset_unavailable_offline_names_task_and_dataset(model_dir, tmp_path, capsys, monkeypatch) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    _local_task(tmp_path, "hub_task", dataset_path="moequant-tests/not-a-dataset", dataset_kwargs=None)
    argv = ["eval-tasks", "--model", str(model_dir), "--tasks", "hub_task", "--include-path", str(tmp_path)]
    line = _fails([*argv, "--out", str(tmp_path / "o.json")], capsys, "dataset of task 'hub_task' is not available")
    assert "moequant-tests/not-a-dataset" in line and "--include-path" in line


def test_make_tasks_bad_input(tmp_path, capsys) -> None:
    _fails(["make-tasks", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "t")], capsys, "does not exist")
    _fails(["make-tasks", "--data", str(tmp_path), "--out", str(tmp_path / "t"), "--docs", "0"], capsys, "docs_per_task")


def test_unknown_dtype(model_dir, tmp_path, capsys) -> None:
    argv = ["eval-ppl", "--model", str(model_dir), "--dataset", "c4", "--dtype", "float8"]
    _fails([*argv, "--out", str(tmp_path / "o.json")], capsys, "unknown dtype 'float8'")
