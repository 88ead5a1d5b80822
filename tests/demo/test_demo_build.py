"""Tiny demo builds of every family: they load offline, are reproducible and summarised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from moequant.demo import DOMAINS, FAMILIES, MIXED, SPLITS, SUMMARY, build_demo
from moequant.errors import UsageError

from .conftest import TINY_STEPS

EXPECTED_CLASSES = {
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}


@pytest.mark.parametrize("family", FAMILIES)
def test_build_loads_offline(tiny_demos: dict[str, Path], family: str) -> None:
    directory = tiny_demos[family]
    model = AutoModelForCausalLM.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert type(model).__name__ == EXPECTED_CLASSES[family]
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    ids = tokenizer("Q: 37 + 48 = ?", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tokenizer.bos_token_id
    assert tokenizer.tokenize("1234") == ["1", "2", "3", "4"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()
    assert not list(directory.parent.glob(".tmp-*"))


def test_family_specifics(tiny_demos: dict[str, Path]) -> None:
    qwen = AutoModelForCausalLM.from_pretrained(tiny_demos["qwen2_moe"])
    assert all(hasattr(layer.mlp, "shared_expert") for layer in qwen.model.layers)
    deepseek = AutoModelForCausalLM.from_pretrained(tiny_demos["deepseek_v3"])
    assert deepseek.config.first_k_dense_replace == 1
    assert not hasattr(deepseek.model.layers[0].mlp, "experts")
    assert all(hasattr(layer.mlp, "shared_experts") for layer in deepseek.model.layers[1:])


@pytest.mark.parametrize("family", FAMILIES)
def test_summary_fields(tiny_demos: dict[str, Path], family: str) -> None:
    summary = json.loads((tiny_demos[family] / SUMMARY).read_text())
    assert summary["family"] == family and summary["steps"] == TINY_STEPS and summary["seed"] == 0
    assert summary["config"]["model_type"] == family
    assert summary["seconds"] > 0
    assert set(summary["perplexity"]) == {*DOMAINS, MIXED}
    assert all(1 < value < 2 * summary["config"]["vocab_size"] for value in summary["perplexity"].values())
    experts = summary["shape"]["num_experts"]
    for domain in DOMAINS:
        usage = summary["expert_usage"][domain]
        assert len(usage) == len(summary["moe_layers"])
        for row in usage:
            assert len(row) == experts and sum(row) == pytest.approx(1.0, abs=1e-4)
    for domain in (*DOMAINS, MIXED):
        for split in SPLITS:
            assert (tiny_demos[family] / "data" / domain / f"{split}.txt").stat().st_size > 0


def test_same_seed_same_weights(tiny_demos: dict[str, Path], tmp_path: Path) -> None:
    reference = load_file(tiny_demos["mixtral"] / "model.safetensors")
    again = load_file(build_demo(tmp_path / "again", "mixtral", steps=TINY_STEPS, seed=0, tiny=True) / "model.safetensors")
    assert reference.keys() == again.keys()
    assert all(torch.equal(reference[name], again[name]) for name in reference)
    other = load_file(build_demo(tmp_path / "other", "mixtral", steps=TINY_STEPS, seed=1, tiny=True) / "model.safetensors")
    assert any(not torch.equal(reference[name], other[name]) for name in reference)


def test_shape_overrides_and_rebuild_in_place(tmp_path: Path) -> None:
    out = build_demo(tmp_path / "demo", "mixtral", steps=1, tiny=True, num_layers=3, num_experts=6)
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["num_local_experts"] == 6
    build_demo(out, "mixtral", steps=1, tiny=True)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"family": "llama"}, "unknown family"),
        ({"steps": 0}, "steps"),
        ({"hidden_size": 30}, "multiple"),
        ({"top_k": 9}, "top_k"),
        ({"experts": 4}, "unknown shape field"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_demo(tmp_path / "demo", **{"tiny": True, **kwargs})
    assert not (tmp_path / "demo").exists()
