from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moequant.cli import main
from moequant.models import adapt
from moequant.models.synthetic import tiny_model
from moequant.rotation import read_metadata, restore_online_hadamard
from moequant.rotation.fuse import norm_readers


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("source_qwen2_moe")
    tiny_model("qwen2_moe", seed=4, tie_word_embeddings=True).save_pretrained(directory)
    return directory


def _logits(directory: Path, input_ids: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        return model, model(input_ids=input_ids).logits


def test_rotate_writes_a_loadable_equivalent_model(
    source_dir: Path, tmp_path: Path, input_ids: torch.Tensor, capsys
) -> None:
    out = tmp_path / "rotated"
    assert main(["rotate", "--model", str(source_dir), "--out", str(out), "--seed", "7", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "sylvester(32)" in captured.out and "[rotate] peak host RSS" in captured.err
    _, before = _logits(source_dir, input_ids)
    model, after = _logits(out, input_ids)
    assert ((after - before).abs().max() / before.abs().max()).item() <= 1e-4
    for group in norm_readers(adapt(model)):
        assert torch.equal(group.norm.weight, torch.ones_like(group.norm.weight))
    assert not model.config.tie_word_embeddings
    metadata = json.loads((out / "rotation.json").read_text())
    assert metadata["seed"] == 7 and metadata["hidden_size"] == 32 and metadata["untied_lm_head"]
    assert metadata["transform"] == "torch (float64)" and metadata["source_model"] == str(source_dir)
    assert set(metadata["source_hashes"]) >= {"config.json", "model.safetensors"}
    assert metadata["moequant_version"] and metadata["online_hadamard"] is None
    assert metadata["memory"]["peak_host_bytes"] > 0 and metadata["memory"]["peak_device_bytes"] is None
    assert not (out / "tokenizer.json").exists(), "a source without a tokenizer must not gain one"
    assert not list(tmp_path.glob(".tmp-*"))


def test_online_hadamard_round_trip(source_dir: Path, tmp_path: Path, input_ids: torch.Tensor) -> None:
    out = tmp_path / "rotated_online"
    assert main(["rotate", "--model", str(source_dir), "--out", str(out), "--online-hadamard", "--device", "cpu"]) == 0
    _, before = _logits(source_dir, input_ids)
    model, raw = _logits(out, input_ids)
    assert read_metadata(out)["online_hadamard"] == {
        "sizes": {"24": "paley1(q=11) x sylvester(2)", "40": "paley1(q=19) x sylvester(2)"}
    }
    assert ((raw - before).abs().max() / before.abs().max()).item() > 1e-2
    assert restore_online_hadamard(model, out) is not None
    with torch.no_grad():
        after = model(input_ids=input_ids).logits
    assert ((after - before).abs().max() / before.abs().max()).item() <= 1e-4


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--seed", "-1"], "seed must be a non-negative integer"),
        (["--model", "/nonexistent/model"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(source_dir: Path, tmp_path: Path, capsys, argv: list[str], fragment: str) -> None:
    base = {"--model": str(source_dir), "--out": str(tmp_path / "o"), "--device": "cpu"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = ["rotate"] + [item for pair in base.items() for item in pair]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
