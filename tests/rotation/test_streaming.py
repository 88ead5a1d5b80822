"""`moequant rotate --stream`: one decoder layer at a time, and the same rotated model as in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moequant.cli import main
from moequant.loading import load_model
from moequant.models.streaming import offload_folder


def _rotate(source: Path, out: Path, *extra: str) -> int:
    return main(["rotate", "--model", str(source), "--out", str(out), "--seed", "3", "--device", "cpu", *extra])


@pytest.mark.parametrize("layout", ["mixtral", "deepseek_v3", "qwen2_moe", "deepseek_remote"])
def test_streamed_rotation_equals_the_in_memory_one_bit_for_bit(tmp_path, make_tiny, layout):
    source = tmp_path / "source"
    make_tiny(layout, seed=1).save_pretrained(source)
    remote = ["--trust-remote-code"] if layout == "deepseek_remote" else []
    assert _rotate(source, tmp_path / "memory", *remote) == 0
    assert _rotate(source, tmp_path / "streamed", "--stream", *remote) == 0
    trust = bool(remote)
    memory = load_model(str(tmp_path / "memory"), trust_remote_code=trust).state_dict()
    streamed = load_model(str(tmp_path / "streamed"), trust_remote_code=trust).state_dict()
    assert memory.keys() == streamed.keys()
    assert [name for name in memory if not torch.equal(memory[name], streamed[name])] == []
    assert not offload_folder(tmp_path / "streamed").exists()
    shards = sorted(p.name for p in (tmp_path / "streamed").glob("*.safetensors"))
    layers = load_model(str(source), trust_remote_code=trust).config.num_hidden_layers
    assert len(shards) == layers + 1, shards


def test_a_layernorm_model_streams_to_the_in_memory_rotation(tmp_path):
    """PhiMoE's norm kinds are checked per streamed layer; the centred rotation is the same bit for bit."""
    from moequant.models.synthetic import tiny_any_model

    source = tmp_path / "source"
    tiny_any_model("phimoe", seed=1).save_pretrained(source)
    assert _rotate(source, tmp_path / "memory") == 0
    assert _rotate(source, tmp_path / "streamed", "--stream") == 0
    memory = load_model(str(tmp_path / "memory")).state_dict()
    streamed = load_model(str(tmp_path / "streamed")).state_dict()
    assert [name for name in memory if not torch.equal(memory[name], streamed[name])] == []


def test_a_streamed_online_hadamard_is_refused_in_one_line(tmp_path, make_tiny, capsys):
    source = tmp_path / "source"
    make_tiny("mixtral").save_pretrained(source)
    capsys.readouterr()
    assert _rotate(source, tmp_path / "out", "--stream", "--online-hadamard") == 2
    err = capsys.readouterr().err.strip()
    assert "--online-hadamard cannot be streamed" in err and err.count("\n") == 0, err
    assert not (tmp_path / "out").exists()
