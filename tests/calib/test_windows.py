from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moequant.calib.corpora import load_hub_documents, read_text_file
from moequant.calib.windows import corpus_text, sample_windows
from moequant.errors import UsageError


def test_windows_are_seeded_slices_of_the_stream() -> None:
    stream = torch.arange(1000)
    windows = sample_windows(stream, nsamples=6, seqlen=32, seed=7, name="t")
    assert windows.shape == (6, 32)
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(6, 31, dtype=torch.long))
    assert torch.equal(windows, sample_windows(stream, 6, 32, 7, "t"))
    assert not torch.equal(windows, sample_windows(stream, 6, 32, 8, "t"))
    assert torch.equal(sample_windows(stream, 3, 1000, 0, "t"), stream.expand(3, -1))


def test_too_short_a_corpus_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="corpus has 10 tokens, fewer than one window of seqlen 11"):
        sample_windows(torch.arange(10), 1, 11, 0, "corpus")


def test_large_corpora_contribute_a_seeded_subset() -> None:
    documents = [f"doc{i} " * 10 for i in range(100)]
    assert corpus_text(documents, seed=0, max_chars=10**6) == "\n\n".join(documents)
    subset = corpus_text(documents, seed=0, max_chars=500)
    assert 500 <= len(subset) < 700
    assert subset == corpus_text(documents, seed=0, max_chars=500)
    assert subset != corpus_text(documents, seed=1, max_chars=500)


def test_text_and_jsonl_files(tmp_path: Path) -> None:
    plain = tmp_path / "a.txt"
    plain.write_text("hello\n\nworld")
    assert read_text_file(plain) == ["hello\n\nworld"]
    rows = tmp_path / "b.jsonl"
    rows.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two", "id": 3}) + "\n")
    assert read_text_file(rows) == ["one", "two"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "holds no text"), ("  \n", "holds no text"), ('{"body": "x"}\n', "string 'text' field"), ("{x\n", "not a JSON line")],
)
def test_bad_text_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / ("bad.jsonl" if content.strip().startswith("{") else "bad.txt")
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        read_text_file(path)
    with pytest.raises(UsageError, match="does not exist"):
        read_text_file(tmp_path / "missing.txt")


def test_hub_source_offline_names_dataset_and_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UsageError, match=r"gsm8k \(gsm8k, main, train split\).*--data-path") as info:
        load_hub_documents("gsm8k")
    assert "\n" not in str(info.value)


def test_hub_source_from_local_copies(tmp_path: Path) -> None:
    rows = tmp_path / "gsm8k.jsonl"
    rows.write_text("".join(json.dumps({"question": f"q{i}?", "answer": "4"}) + "\n" for i in range(3)))
    assert load_hub_documents("gsm8k", str(rows)) == ["q0?", "q1?", "q2?"]
    raw = tmp_path / "wiki.train.raw"
    raw.write_text(" = Title = \n text")
    assert load_hub_documents("wikitext2", str(raw)) == [" = Title = \n text"]
    import datasets

    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"prompt": ["def f():"]})}).save_to_disk(str(saved))
    assert load_hub_documents("humaneval", str(saved)) == ["def f():"]
    wrong_field = tmp_path / "x.jsonl"
    wrong_field.write_text(json.dumps({"text": "t"}) + "\n")
    with pytest.raises(UsageError, match="no 'question' column"):
        load_hub_documents("gsm8k", str(wrong_field))
    with pytest.raises(UsageError, match="does not exist"):
        load_hub_documents("c4", str(tmp_path / "nowhere"))

