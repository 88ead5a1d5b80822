from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import moequant
from moequant.calib.balance import sigma
from moequant.calib.records import read_calibration, summary_path, tokenizer_fingerprint
from moequant.cli import main
from moequant.models import adapt
from moequant.loading import load_model, load_tokenizer
from moequant.models.routing import expert_counts


def _calibrate(model_dir: Path, out: Path, *extra: str) -> int:
    return main(["calibrate", "--model", str(model_dir), "--device", "cpu", "--out", str(out), *extra])


def test_ebss_writes_records_and_summary(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ebss.jsonl"
    args = ("--source", "ebss", "--nsamples", "3", "--seqlen", "12", "--width", "3", "--batch-size", "2")
    assert _calibrate(tiny_dir, out, *args) == 0
    tokenizer = load_tokenizer(str(tiny_dir))
    ids, summary = read_calibration(out, tokenizer)
    assert ids.shape == (3, 12)
    assert not set(ids.unique().tolist()) & {0, 1, 2}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["text"] for row in rows] == [tokenizer.decode(row["input_ids"]) for row in rows]
    assert summary["tokenizer"] == tokenizer_fingerprint(tokenizer)
    assert summary["moequant_version"] == moequant.__version__
    assert summary["config"]["width"] == 3 and summary["source"] == "ebss"
    counts = expert_counts(adapt(load_model(str(tiny_dir))), ids)
    assert summary["sigma"] == pytest.approx(float(sigma(counts)), abs=1e-12)
    usage = torch.tensor(summary["per_layer_usage"], dtype=torch.float64)
    assert usage.shape == (2, 4) and torch.allclose(usage.sum(dim=1), torch.ones(2, dtype=torch.float64))
    assert summary["mean_logprob"] == pytest.approx(sum(row["mean_logprob"] for row in rows) / 3)
    assert summary["perplexity"] > 1 and summary["seconds"] > 0
    assert summary["memory"]["peak_host_bytes"] > 0

    again = tmp_path / "again.jsonl"
    assert _calibrate(tiny_dir, again, *args) == 0
    assert again.read_bytes() == out.read_bytes()
    other_batching = tmp_path / "batch1.jsonl"
    assert _calibrate(tiny_dir, other_batching, *args[:-1], "1") == 0
    assert [json.loads(r)["input_ids"] for r in other_batching.read_text().splitlines()] == ids.tolist()


def test_text_windows_share_the_format(tiny_dir: Path, prose_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "prose.jsonl"
    assert _calibrate(tiny_dir, out, "--source", f"text:{prose_file}", "--nsamples", "4", "--seqlen", "16") == 0
    ids, summary = read_calibration(out, load_tokenizer(str(tiny_dir)))
    assert ids.shape == (4, 16)
    assert summary["source"] == f"text:{prose_file}"
    assert list(summary["inputs"].values()) == [moequant.artifacts.file_sha256(prose_file)]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(row["sigma"] >= 0 and row["mean_logprob"] < 0 for row in rows)
    assert summary_path(out).is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--tau", "0"), "tau must be > 0, got 0.0"),
        (("--tau", "-1"), "tau must be > 0"),
        (("--width", "0"), "width must be >= 1, got 0"),
        (("--nsamples", "0"), "nsamples must be >= 1, got 0"),
        (("--seqlen", "129"), "seqlen 129 exceeds the model's maximum positions (128)"),
        (("--source", "wiki"), "unknown calibration source 'wiki'"),
        (("--source", "text:EMPTY"), "holds no text"),
        (("--source", "text:/no/such/file.txt"), "does not exist"),
        (("--source", "gsm8k"), "pass --data-path"),
        (("--source", "ebss", "--data-path", "x"), "data path only applies"),
        (("--out", "x.json"), "--out must name a .jsonl file"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], message: str
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    extra = tuple(arg.replace("EMPTY", str(empty)) for arg in extra)
    out = tmp_path / "o.jsonl"
    argv = ["calibrate", "--model", str(tiny_dir), "--device", "cpu", "--nsamples", "2", "--seqlen", "8", "--out", str(out)]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("moequant calibrate: error: ")
    assert message in err
    assert not out.exists()
