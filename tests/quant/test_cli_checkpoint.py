"""`moequant quantize` refuses what a pack-quantized checkpoint cannot serve, and `moequant
validate` passes on what it writes, scales in the requested dtype."""

import json

import pytest
from safetensors import safe_open

from moequant.cli import main


def run(capsys, verb, *argv):
    capsys.readouterr()
    code = main([verb, *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def test_bf16_scales_of_a_float32_model_reach_the_checkpoint_and_validate(tmp_path, model_dir, capsys):
    out = tmp_path / "rtn-w4"
    code, _, err = run(capsys, "quantize", "--model", model_dir("qwen2_moe"), "--algo", "rtn", "--wbits", 4,
                       "--groupsize", 8, "--scale-dtype", "bfloat16", "--out", out)
    assert code == 0, err
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["scale_dtype"] == "bfloat16" and meta["config"]["scale_dtype"] == "bfloat16"
    name = "model.layers.0.mlp.experts.1.up_proj.weight_scale"
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    with safe_open(str(out / index[name]), "pt") as handle:
        scale = handle.get_tensor(name)
    assert scale.float().bfloat16().float().equal(scale.float())
    code, printed, err = run(capsys, "validate", out)
    assert code == 0, err
    assert "valid" in printed and "W4 group 8" in printed


def test_the_default_scale_dtype_is_the_model_dtype(tmp_path, model_dir, capsys):
    out = tmp_path / "rtn-w3"
    code, printed, err = run(capsys, "quantize", "--model", model_dir("mixtral"), "--algo", "rtn", "--wbits", 3,
                             "--dtype", "bfloat16", "--out", out)
    assert code == 0, err
    assert "vLLM's fused MoE kernels take W4/W8 only" in printed
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["grid"]["scale_dtype"] == "bfloat16" and meta["servable"]["vllm"] is False


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--asym"], "--asym: stock transformers cannot load asymmetric"),
        (["--dtype", "bfloat16", "--scale-dtype", "float32"], "--scale-dtype float32 with --dtype bfloat16"),
    ],
)
def test_unservable_requests_are_refused_in_one_line(tmp_path, model_dir, capsys, extra, message):
    out = tmp_path / "out"
    code, _, err = run(capsys, "quantize", "--model", model_dir("mixtral"), "--algo", "rtn", "--wbits", 4, *extra,
                       "--out", out)
    assert code == 2 and message in err and err.count("\n") == 0, err
    assert not out.exists()


def test_an_online_hadamard_model_is_refused(tmp_path, model_dir, capsys):
    src = model_dir("olmoe")
    (src / "rotation.json").write_text(json.dumps({"online_hadamard": {"modules": ["down_proj"]}}))
    code, _, err = run(capsys, "quantize", "--model", src, "--algo", "rtn", "--wbits", 4, "--out", tmp_path / "o")
    assert code == 2 and "--online-hadamard" in err and err.count("\n") == 0, err


def test_validate_of_a_directory_whose_config_is_not_a_model_is_one_line(tmp_path, capsys) -> None:
    from moequant.cli import main

    (tmp_path / "config.json").write_text("{}")
    capsys.readouterr()
    assert main(["validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err, err
