"""W3 on a trained demo MoE: GPTQ must halve RTN's divergence from the fp model (SPEC §6).

The model is the demo's width (64, intermediate 128) at 4 layers, trained for 500 steps on the
small corpus; a narrower model leaves GPTQ too few columns to compensate errors over, and the
full 10-layer build takes minutes. calibration
windows come from its train split and the divergence is measured on its held-out test split.
"""

import math

import pytest
import torch

from moequant.models.loading import load_model, load_tokenizer
from moequant.quant.config import QuantConfig
from moequant.quant.registry import get
from tests.quant.helpers import mean_kl

demo = pytest.importorskip("moequant.demo")

SEQLEN = 64


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo.build_demo(
        tmp_path_factory.mktemp("demo") / "model",
        steps=500,
        seed=0,
        tiny=True,
        hidden_size=64,
        intermediate_size=128,
        num_layers=4,
    )


def windows(directory, split: str, count: int) -> torch.Tensor:
    tokenizer = load_tokenizer(str(directory))
    text = (directory / "data" / "mixed" / f"{split}.txt").read_text()
    ids = torch.tensor(tokenizer(text)["input_ids"][: count * SEQLEN])
    return ids.reshape(count, SEQLEN)


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
    return math.exp(float(loss))


@pytest.mark.slow
def test_w3_gptq_halves_rtn_divergence(demo_dir):
    calib, held_out = windows(demo_dir, "train", 128), windows(demo_dir, "test", 32)
    with torch.no_grad():
        fp_logits = load_model(str(demo_dir))(held_out).logits
    kl, ppl = {}, {"fp": perplexity(fp_logits, held_out)}
    for algo in ("rtn", "gptq", "agq"):
        model = load_model(str(demo_dir))
        get(algo).quantize(model, calib, QuantConfig(algo=algo, wbits=3, act_order=True, device="cpu"))
        with torch.no_grad():
            logits = model(held_out).logits
        kl[algo], ppl[algo] = mean_kl(fp_logits, logits), perplexity(logits, held_out)
    print(f"W3 demo: KL {kl}, PPL {ppl}")
    assert kl["gptq"] <= 0.5 * kl["rtn"], kl
    assert ppl["gptq"] - ppl["fp"] <= ppl["rtn"] - ppl["fp"], ppl
    assert kl["agq"] < kl["rtn"], kl
