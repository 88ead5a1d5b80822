"""Bad `--model` values end in one line naming what was given and what is supported, exit 2."""

from __future__ import annotations

import pytest

from moequant.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_model_directory(capsys, tmp_path):
    code, err = _run(capsys, "inspect", "--model", str(tmp_path / "nope"))
    assert code == 2
    assert err.count("\n") == 0 and "does not exist" in err and "nope" in err


def test_unsupported_model_type(capsys, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    code, err = _run(capsys, "inspect", "--model", str(tmp_path / "llama"))
    assert code == 2
    assert "'llama'" in err and "no experts" in err and err.count("\n") == 0


def test_supported_family_without_moe_layers(capsys, tmp_path):
    from moequant.models.synthetic import tiny_model

    tiny_model("deepseek_v3", first_k_dense_replace=3).save_pretrained(tmp_path / "dense")
    code, err = _run(capsys, "inspect", "--model", str(tmp_path / "dense"))
    assert code == 2
    assert "no MoE layers" in err and "deepseek_v3" in err


def test_hub_id_not_in_offline_cache(capsys):
    code, err = _run(capsys, "inspect", "--model", "no-such-org/no-such-moe-model")
    assert code == 2
    assert "no-such-org/no-such-moe-model" in err and err.count("\n") == 0


def test_inspect_describes_layers(capsys, make_tiny, tmp_path):
    make_tiny("qwen2_moe").save_pretrained(tmp_path / "q")
    capsys.readouterr()
    assert main(["inspect", "--model", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert '"family": "qwen2_moe"' in out and '"shared_gate": true' in out and '"layout": "fused"' in out


def _corrupt(directory, how: str) -> str:
    """Break a saved model's weights one way; returns the file name the error must name."""
    import json

    weights = directory / "model.safetensors"
    if how == "missing":
        weights.unlink()
        return "model.safetensors"
    if how == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        return "model.safetensors"
    if how == "not-safetensors":
        weights.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello, not a header")
        return "model.safetensors"
    if how == "empty":
        weights.write_bytes(b"")
        return "model.safetensors"
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return "model-00002-of-00002.safetensors"


@pytest.mark.parametrize("how", ["missing", "truncated", "not-safetensors", "empty", "missing-shard"])
def test_bad_weight_files_are_one_line_naming_the_file(capsys, tmp_path, how: str):
    from moequant.models.synthetic import tiny_model

    tiny_model("mixtral").save_pretrained(tmp_path / "m")
    name = _corrupt(tmp_path / "m", how)
    code, err = _run(capsys, "inspect", "--model", str(tmp_path / "m"))
    assert code == 2, err
    assert err.count("\n") == 0 and name in err and "Traceback" not in err, err
