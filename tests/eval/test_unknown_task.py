"""An unknown task name is checked against lm-eval's full index (about 30 s to build), so it lives alone."""

from __future__ import annotations

from moequant.cli import main


def test_unknown_task_is_a_one_line_error_with_suggestions(model_dir, tmp_path, capsys) -> None:
    argv = ["eval-tasks", "--model", str(model_dir), "--tasks", "hellaswagg", "--out", str(tmp_path / "o.json")]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("moequant ")]
    assert len(lines) == 1
    assert "unknown lm-eval task 'hellaswagg'" in lines[0] and "did you mean hellaswag" in lines[0]
    assert not (tmp_path / "o.json").exists()
