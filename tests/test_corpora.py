"""Where text comes from: local text files, local copies of Hub corpora, and the one-line offline failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moequant.corpora import HUB_DATASETS, load_hub_documents, read_text_file
from moequant.errors import UsageError


def test_calibration_and_evaluation_share_dataset_ids() -> None:
    assert HUB_DATASETS["wikitext2", "calibration"].repo == HUB_DATASETS["wikitext2", "evaluation"].repo
    assert HUB_DATASETS["wikitext2", "calibration"].split == "train"
    assert HUB_DATASETS["wikitext2", "evaluation"].split == "test"
    assert HUB_DATASETS["c4", "evaluation"].data_files == {"validation": "en/c4-validation.00000-of-00008.json.gz"}


def test_text_and_jsonl_files(tmp_path: Path) -> None:
    plain = tmp_path / "a.txt"
    plain.write_text("hello\n\nworld")
    assert read_text_file(plain) == ["hello\n\nworld"]
    rows = tmp_path / "b.jsonl"
    rows.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two", "id": 3}) + "\n")
    assert read_text_file(rows) == ["one", "two"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.txt", "", "holds no text"),
        ("bad.txt", "  \n", "is empty"),
        ("bad.jsonl", "  \n", "is empty"),
        ("bad.jsonl", '{"body": "x"}\n', "string 'text' field"),
        ("bad.jsonl", '{"x": 1}\n', "no string field"),
        ("bad.jsonl", "{x\n", "not a JSON line"),
        ("bad.jsonl", "not json\n", "is not valid JSON"),
    ],
)
def test_bad_text_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        read_text_file(path)
    with pytest.raises(UsageError, match="does not exist"):
        read_text_file(tmp_path / "missing.txt")


def test_hub_source_offline_names_dataset_and_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UsageError, match=r"gsm8k \(gsm8k, main, train split\).*--data-path") as info:
        load_hub_documents("gsm8k", "calibration")
    assert "\n" not in str(info.value)


def test_hub_dataset_unreachable_offline_names_dataset_and_option(tmp_path, monkeypatch) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UsageError) as caught:
        load_hub_documents("wikitext2", "evaluation")
    message = str(caught.value)
    assert "'wikitext2'" in message and "Salesforce/wikitext" in message and "--data-path" in message
    assert "\n" not in message


def test_hub_source_from_local_copies(tmp_path: Path) -> None:
    rows = tmp_path / "gsm8k.jsonl"
    rows.write_text("".join(json.dumps({"question": f"q{i}?", "answer": "4"}) + "\n" for i in range(3)))
    assert load_hub_documents("gsm8k", "calibration", str(rows)) == ["q0?", "q1?", "q2?"]
    raw = tmp_path / "wiki.train.raw"
    raw.write_text(" = Title = \n text")
    assert load_hub_documents("wikitext2", "calibration", str(raw)) == [" = Title = \n text"]
    import datasets

    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"prompt": ["def f():"]})}).save_to_disk(str(saved))
    assert load_hub_documents("humaneval", "calibration", str(saved)) == ["def f():"]
    with pytest.raises(UsageError, match="has no split 'train'"):
        load_hub_documents("gsm8k", "calibration", str(saved))
    wrong_field = tmp_path / "x.jsonl"
    wrong_field.write_text(json.dumps({"text": "t"}) + "\n")
    with pytest.raises(UsageError, match="no 'question' column"):
        load_hub_documents("gsm8k", "calibration", str(wrong_field))
    with pytest.raises(UsageError, match="does not exist"):
        load_hub_documents("c4", "calibration", str(tmp_path / "nowhere"))


def test_local_copy_errors_name_the_dataset(tmp_path) -> None:
    with pytest.raises(UsageError, match="local copy of dataset 'c4'.*does not exist"):
        load_hub_documents("c4", "evaluation", str(tmp_path / "missing"))
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(UsageError, match="has no 'text' column"):
        load_hub_documents("wikitext2", "evaluation", str(path))
