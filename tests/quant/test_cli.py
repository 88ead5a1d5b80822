import json

import pytest
import torch

from moequant.cli import main
from moequant.loading import load_model
from moequant.models import adapt
from tests.quant.helpers import word_tokenizer, write_calib


def run_cli(capsys, *argv):
    capsys.readouterr()
    code = main(["quantize", *map(str, argv)])
    return code, capsys.readouterr().err.strip()


def test_quantize_writes_a_loadable_checkpoint(tmp_path, model_dir, tokenizer, capsys):
    src = model_dir("qwen2_moe")
    calib = write_calib(tmp_path / "calib.jsonl", tokenizer, nsamples=6, seqlen=16)
    out = tmp_path / "agq-w3"
    code, err = run_cli(capsys, "--model", src, "--algo", "agq", "--wbits", 3, "--calib", calib,
                        "--nsamples", 4, "--device", "cpu", "--out", out)
    assert code == 0, err
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["method"] == "agq" and meta["wbits"] == 3 and meta["calibration"]["nsamples"] == 4
    assert len(meta["calibration"]["sha256"]) == 64
    model = load_model(str(out))
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[5, 6, 7]])).logits).all()
    assert (out / "report.csv").read_text().startswith("layer,module,expert,tokens,mass,loss,damp,fallback")
    memory = meta["memory"]
    readers = sum(m.out_features for m in adapt(load_model(src)).layers[0].attention.readers.values())
    # inputs, outputs, MoE input and mixer output (4 × hidden 32), the q/k/v outputs; 4 × 16 tokens, fp32
    assert memory["planned"]["host"]["activations"] == (4 * 32 + readers) * 4 * 16 * 4
    assert memory["peak_host_bytes"] >= sum(memory["planned"]["host"].values())
    assert "memory plan: host" in err and "peak host RSS" in err
    assert not (tmp_path / "agq-w3.journal").exists(), "the journal goes once the checkpoint is written"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--algo", "rtn", "--wbits", 9], "wbits must be an integer from 2 to 8, got 9"),
        (["--algo", "rtn", "--wbits", 1], "wbits must be an integer from 2 to 8, got 1"),
        (["--algo", "rtn", "--wbits", 4, "--groupsize", 7], "groupsize 7 does not divide the 32 input features"),
        (["--algo", "gptq", "--wbits", 4], "--algo gptq needs calibration data"),
        (["--algo", "agq", "--wbits", 4], "--algo agq needs calibration data"),
        (["--algo", "spqr", "--wbits", 4], "unknown algorithm 'spqr'"),
        (["--algo", "gptq", "--wbits", 4, "--agq-weight", "c2"], "--agq-weight is an option of agq; --algo gptq does not take it"),
        (["--algo", "rtn", "--wbits", 4, "--no-act-order"], "--act-order is an option of agq, gptq; --algo rtn does not take it"),
        (["--algo", "gptq", "--wbits", 4, "--awq-alpha", 0.5], "--awq-alpha is an option of agq_awq, awq; --algo gptq does not take it"),
        (["--algo", "awq", "--wbits", 4, "--awq-n-grid", 0], "awq_n_grid must be a positive integer, got 0"),
        (["--algo", "rtn", "--wbits", 4, "--asym"], "--asym: stock transformers cannot load asymmetric"),
        (["--algo", "rtn", "--wbits", 4, "--clip-maxshrink", 1], "clip_maxshrink must lie in [0, 1), got 1.0"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, model_dir, capsys, extra, message):
    code, err = run_cli(capsys, "--model", model_dir("mixtral"), *extra, "--out", tmp_path / "out")
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_every_knob_has_a_flag_and_lands_in_the_recorded_config(tmp_path, model_dir, capsys):
    out = tmp_path / "rtn"
    code, err = run_cli(capsys, "--model", model_dir("mixtral"), "--algo", "rtn", "--wbits", 4, "--clip-norm", 2.0,
                        "--clip-grid", 50, "--clip-maxshrink", 0.5, "--expert-chunk", 3, "--keep-router-fp",
                        "--device", "cpu", "--out", out)
    assert code == 0, err
    meta = json.loads((out / "quantization.json").read_text())
    config = meta["config"]
    assert (config["clip_norm"], config["clip_grid"], config["clip_maxshrink"], config["expert_chunk"]) == (2.0, 50, 0.5, 3)
    assert config["quantize_router"] is False and config["algo"] == "rtn" and "damp" not in config
    assert (meta["wbits"], meta["sym"], meta["clip"], meta["damp"]) == (4, True, True, None)


def test_calibration_from_another_tokenizer_is_refused(tmp_path, model_dir, capsys):
    calib = write_calib(tmp_path / "other.jsonl", word_tokenizer(prefix="x"))
    code, err = run_cli(capsys, "--model", model_dir("mixtral"), "--algo", "gptq", "--wbits", 4,
                        "--calib", calib, "--out", tmp_path / "out")
    assert code == 2 and "another tokenizer" in err and len(err.splitlines()) == 1


def test_the_report_is_the_same_whatever_the_hash_seed(tmp_path, make_tiny, tokenizer):
    """Mixed AGQ weightings solve in the order the options name them, not in a set's hash order."""
    import os
    import subprocess
    import sys

    src = tmp_path / "src"
    make_tiny("qwen2_moe").save_pretrained(src)
    tokenizer.save_pretrained(src)
    calib = write_calib(tmp_path / "calib.jsonl", tokenizer, nsamples=4, seqlen=16)
    reports = []
    for seed in ("1", "2"):
        out = tmp_path / f"q{seed}"
        argv = [sys.executable, "-m", "moequant", "quantize", "--model", str(src), "--algo", "agq", "--wbits", "4",
                "--calib", str(calib), "--agq-projections", "up,down", "--device", "cpu", "--out", str(out)]
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed})
        reports.append((out / "report.csv").read_text())
    assert reports[0] == reports[1]
