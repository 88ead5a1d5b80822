"""Text sources: local files, local copies of Hub corpora, and the one-line offline failure."""

from __future__ import annotations

import json

import pytest

from moequant.errors import UsageError
from moequant.eval.datasets import WINDOW_PROTOCOLS, load_eval_text

WIKI_ROWS = ["", " = Title = \n", "", " First paragraph . \n", " Second one . \n"]


def test_text_files_are_read_as_one_stream(tmp_path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("hello\nworld\n")
    text = load_eval_text(f"text:{txt}")
    assert text.documents == ["hello\nworld\n"] and text.protocol == "consecutive"
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    assert load_eval_text(f"text:{jsonl}").documents == ["one\n\ntwo"]


def test_fingerprint_follows_the_text(tmp_path) -> None:
    first, second = tmp_path / "1.txt", tmp_path / "2.txt"
    first.write_text("same")
    second.write_text("same")
    assert load_eval_text(f"text:{first}").sha256() == load_eval_text(f"text:{second}").sha256()
    second.write_text("other")
    assert load_eval_text(f"text:{first}").sha256() != load_eval_text(f"text:{second}").sha256()


@pytest.mark.parametrize(
    "content, message",
    [(None, "does not exist"), ("  \n", "is empty"), ("not json\n", "is not valid JSON"), ('{"x": 1}\n', "no string field")],
)
def test_bad_text_files_are_one_line_errors(tmp_path, content, message) -> None:
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_eval_text(f"text:{path}")


def test_wikitext2_from_a_save_to_disk_copy_is_joined_by_blank_lines(tmp_path) -> None:
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": WIKI_ROWS})}).save_to_disk(tmp_path / "wiki")
    text = load_eval_text("wikitext2", data_path=str(tmp_path / "wiki"))
    assert text.documents == ["\n\n".join(WIKI_ROWS)]
    assert text.protocol == WINDOW_PROTOCOLS["wikitext2"].protocol == "consecutive"


def test_c4_from_a_local_jsonl_keeps_documents_apart(tmp_path) -> None:
    path = tmp_path / "c4-validation.jsonl"
    path.write_text("".join(json.dumps({"text": t, "url": "u"}) + "\n" for t in ["doc one", "", "doc two"]))
    text = load_eval_text("c4", data_path=str(path))
    assert text.protocol == "random" and text.documents == ["doc one", "doc two"]
