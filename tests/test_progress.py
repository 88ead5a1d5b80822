"""Progress lines reach stderr as plain lines, so a job's log file shows how far a stage is."""

from __future__ import annotations

import subprocess
import sys

from moequant.progress import Ticker, each


def test_each_writes_one_line_per_item_after_its_work(capsys) -> None:
    done = []
    for item in each(["a", "b", "c"], "stage", "part", name=str, detail=lambda: f"{len(done)} done"):
        done.append(item)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[stage] part 1/3 a", "[stage] part 2/3 b", "[stage] part 3/3 c"]
    assert lines[0].endswith("1 done)") and lines[2].endswith("3 done)")


def test_ticker_throttles_but_always_reports_the_end(capsys) -> None:
    ticker = Ticker("EBSS", total=100, unit="tokens", interval=3600)
    for _ in range(10):
        ticker.update(10)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[EBSS] 100/100 tokens (100%)")


def test_rotate_logs_every_decoder_layer_without_a_terminal(tmp_path) -> None:
    """stderr is a file here, as under Snakemake or SLURM; a progress bar would leave it empty."""
    from moequant.models.synthetic import tiny_model

    model = tiny_model("qwen2_moe", seed=1)
    model.save_pretrained(tmp_path / "m")
    layers = model.config.num_hidden_layers
    log = tmp_path / "rotate.log"
    with open(log, "w") as handle:
        result = subprocess.run(
            [sys.executable, "-m", "moequant", "rotate", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "r")],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    text = log.read_text()
    assert result.returncode == 0, text
    for index in range(1, layers + 1):
        assert f"[rotate] layer {index}/{layers}:" in text, text
