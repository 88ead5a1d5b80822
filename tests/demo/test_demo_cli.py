"""`moequant build-demo` on the command line: a tiny build, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moequant.cli import main
from moequant.demo import SUMMARY


def test_tiny_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["build-demo", "--family", "qwen2_moe", "--tiny", "--steps", "2", "--seed", "3", "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / SUMMARY).read_text())
    assert (summary["family"], summary["steps"], summary["seed"]) == ("qwen2_moe", 2, 3)
    assert "held-out perplexity" in capsys.readouterr().out


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moequant build-demo: error: "), err
    return err


def test_unknown_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(["build-demo", "--family", "gpt2", "--tiny", "--out", str(tmp_path / "d")], capsys)
    assert "unknown family 'gpt2'" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_steps_below_one(tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: str) -> None:
    assert "steps" in _error(["build-demo", "--tiny", "--steps", steps, "--out", str(tmp_path / "d")], capsys)


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert "not a directory" in _error(["build-demo", "--tiny", "--out", str(target)], capsys)
    assert target.read_text() == "keep me"


def test_out_is_someone_elses_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    assert "not a demo build" in _error(["build-demo", "--tiny", "--out", str(tmp_path)], capsys)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
