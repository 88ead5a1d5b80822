"""Offline tasks cut from held-out text: deterministic, well-formed, answerable from the text."""

from __future__ import annotations

import json

import pytest
import yaml

from moequant.errors import UsageError
from moequant.eval.config import LocalTaskConfig
from moequant.eval.local_tasks import MANIFEST, segment, write_local_tasks


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_segments_keep_code_indentation_and_split_long_prose_lines() -> None:
    long_line = "First sentence here. " * 12 + "Last one."
    found = segment(f"def f():\n    return 1\n\n{long_line}\n")
    assert [s.text for s in found[:2]] == ["def f():", "    return 1"]
    assert found[2].separator == "\n" and all(s.separator == " " for s in found[3:])
    assert len(found) == 2 + 13


def test_tasks_are_deterministic_and_follow_the_seed(held_out_dir, tmp_path) -> None:
    config = LocalTaskConfig(docs_per_task=15)
    manifest = write_local_tasks(held_out_dir, tmp_path / "a", config)
    write_local_tasks(held_out_dir, tmp_path / "b", config)
    write_local_tasks(held_out_dir, tmp_path / "c", LocalTaskConfig(docs_per_task=15, seed=1))
    data = {name: body for name, body in _files(tmp_path / "a").items() if name.endswith(".jsonl")}
    assert data == {n: b for n, b in _files(tmp_path / "b").items() if n.endswith(".jsonl")}
    assert data != {n: b for n, b in _files(tmp_path / "c").items() if n.endswith(".jsonl")}
    assert sorted(manifest["tasks"]) == sorted(f"demo_{kind}_{domain}" for kind in ("next", "cloze", "word") for domain in ("code", "math", "prose"))
    assert manifest["tasks"]["demo_next_prose"]["docs"] == {"test": 15, "validation": 15}
    assert json.loads((tmp_path / "a" / MANIFEST).read_text())["config"]["seed"] == 0


def test_documents_are_answerable_from_the_held_out_text(held_out_dir, tmp_path) -> None:
    write_local_tasks(held_out_dir, tmp_path / "tasks", LocalTaskConfig(docs_per_task=20))
    math_text = (held_out_dir / "math" / "test.txt").read_text()
    for line in (tmp_path / "tasks" / "demo_next_math.test.jsonl").read_text().splitlines():
        doc = json.loads(line)
        assert len(doc["choices"]) == 4 and len(set(doc["choices"])) == 4
        assert doc["context"] + doc["choices"][doc["label"]] in math_text
        assert sum(doc["context"] + choice in math_text for choice in doc["choices"]) == 1
    for line in (tmp_path / "tasks" / "demo_cloze_math.test.jsonl").read_text().splitlines():
        doc = json.loads(line)
        left, right = doc["context"].rsplit("\n", 1)[-1].split(" + ")[0], doc["context"].split(" + ")[-1]
        assert doc["context"] + doc["target"] in math_text
        assert int(doc["target"]) == int(left) + int(right.split(" =")[0])
    for line in (tmp_path / "tasks" / "demo_word_math.test.jsonl").read_text().splitlines():
        doc = json.loads(line)  # the cloze as multiple choice: the result against other lines' results
        left, right = doc["context"].rsplit("\n", 1)[-1].split(" + ")[0], doc["context"].split(" + ")[-1]
        assert len(set(doc["choices"])) == 4 and doc["context"] + doc["choices"][doc["label"]] in math_text
        assert int(doc["choices"][doc["label"]]) == int(left) + int(right.split(" =")[0])


def test_yaml_points_lm_eval_at_the_final_absolute_data_files(held_out_dir, tmp_path) -> None:
    out = tmp_path / "tasks"
    write_local_tasks(held_out_dir, out, LocalTaskConfig(docs_per_task=5))
    task = yaml.safe_load((out / "demo_next_prose.yaml").read_text())
    assert task["dataset_path"] == "json" and task["fewshot_split"] == "validation"
    assert task["dataset_kwargs"]["data_files"]["test"] == str(out.resolve() / "demo_next_prose.test.jsonl")
    assert "fewshot_split" not in yaml.safe_load((out / "demo_cloze_math.yaml").read_text())
    group = yaml.safe_load((out / "demo.yaml").read_text())
    assert group["group"] == "demo" and len(group["task"]) == 9
    assert not list(tmp_path.glob(".tmp-*"))


def test_bad_inputs_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        write_local_tasks(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no test.txt"):
        write_local_tasks(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "tiny" / "prose").mkdir(parents=True)
    (tmp_path / "tiny" / "prose" / "test.txt").write_text("hello\n")
    with pytest.raises(UsageError, match="too short"):
        write_local_tasks(tmp_path / "tiny", tmp_path / "out")
    with pytest.raises(UsageError, match="group must be an identifier"):
        LocalTaskConfig(group="my tasks")
    with pytest.raises(UsageError, match="choices"):
        LocalTaskConfig(choices=1)


def test_cloze_asks_for_the_final_answer_including_its_sign() -> None:
    import random

    from moequant.eval.local_tasks import cloze_docs

    text = "Q: 41 - 84 * 11 = ?\nA: 84 * 11 = 924; 41 - 924 = -883. The answer is -883.\n"
    docs = cloze_docs(segment(text), LocalTaskConfig(), random.Random(0))
    assert docs == [{"context": "Q: 41 - 84 * 11 = ?\nA: 84 * 11 = 924; 41 - 924 = -883. The answer is", "target": " -883"}]
