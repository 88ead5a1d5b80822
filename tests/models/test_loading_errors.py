"""Bad `--model` values end in one line naming what was given and what is supported, exit 2."""

from __future__ import annotations

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
    assert "'llama'" in err and "mixtral" in err and "qwen2_moe" in err and err.count("\n") == 0


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
