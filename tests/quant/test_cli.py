import json

import pytest
import torch

from moequant.cli import main
from moequant.loading import load_model
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
    assert memory["planned"]["host"]["activations"] == 3 * 4 * 16 * 32 * 4  # inputs, outputs, MoE input; fp32
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
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, model_dir, capsys, extra, message):
    code, err = run_cli(capsys, "--model", model_dir("mixtral"), *extra, "--out", tmp_path / "out")
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_calibration_from_another_tokenizer_is_refused(tmp_path, model_dir, capsys):
    calib = write_calib(tmp_path / "other.jsonl", word_tokenizer(prefix="x"))
    code, err = run_cli(capsys, "--model", model_dir("mixtral"), "--algo", "gptq", "--wbits", 4,
                        "--calib", calib, "--out", tmp_path / "out")
    assert code == 2 and "another tokenizer" in err and len(err.splitlines()) == 1
