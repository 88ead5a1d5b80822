"""`load_model` gives back a directory's function, runtime transforms and device placement included."""

from __future__ import annotations

import pytest
import torch

from moequant.cli import main
from moequant.loading import load_model
from moequant.runtime import resolve_device, spread_map


def test_rotated_directory_with_online_hadamard_loads_equivalent(make_tiny, tmp_path):
    source = tmp_path / "source"
    make_tiny("mixtral", seed=4).save_pretrained(source)
    rotated = tmp_path / "rotated"
    assert main(["rotate", "--model", str(source), "--out", str(rotated), "--online-hadamard", "--device", "cpu"]) == 0
    ids = torch.randint(0, 96, (2, 10))
    with torch.no_grad():
        expected = load_model(str(source))(input_ids=ids).logits
        got = load_model(str(rotated))(input_ids=ids).logits
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-4


@pytest.mark.parametrize("quantized", [False, True])
def test_a_placed_model_computes_what_the_plain_one_does(make_tiny, tmp_path, quantized):
    """`device_map` loading (what `--device all` uses on GPUs) runs through transformers' placement on CPU too."""
    source = tmp_path / "source"
    make_tiny("qwen2_moe", seed=2).save_pretrained(source)
    spec = source
    if quantized:
        spec = tmp_path / "rtn"
        assert main(["quantize", "--model", str(source), "--algo", "rtn", "--wbits", "4", "--out", str(spec),
                     "--device", "cpu"]) == 0
    ids = torch.randint(0, 96, (2, 10))
    plain = load_model(str(spec))
    placed = load_model(str(spec), device_map="balanced")
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, placed(input_ids=ids).logits)


def test_all_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("all") == torch.device("cpu") and spread_map("all") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("all") == torch.device("cuda:0") and spread_map("all") == "balanced"
    assert spread_map("cuda:1") is None and spread_map("auto") is None
