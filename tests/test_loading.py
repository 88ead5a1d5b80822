"""`load_model` gives back a directory's function, runtime transforms included."""

from __future__ import annotations

import torch

from moequant.cli import main
from moequant.loading import load_model


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
