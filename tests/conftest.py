"""Shared test setup: offline, single-threaded, seeded; tiny models of every family."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def cuda_only() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


LAYOUTS = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "olmoe", "deepseek_remote")
"""Six fused transformers families plus the per-expert ModuleList layout of remote-code DeepSeek-MoE."""


@pytest.fixture(scope="session")
def remote_deepseek_dir(tmp_path_factory: pytest.TempPathFactory):
    from tests.fixtures.remote_model import write_remote_deepseek

    return write_remote_deepseek(tmp_path_factory.mktemp("remote_deepseek"))


@pytest.fixture
def make_tiny(remote_deepseek_dir):
    """Build a tiny seeded model of any layout in LAYOUTS."""
    from moequant.loading import load_model
    from moequant.models.synthetic import randomize_, tiny_model

    def build(layout: str, seed: int = 0, dtype: torch.dtype = torch.float32):
        if layout == "deepseek_remote":
            model = load_model(str(remote_deepseek_dir), dtype=dtype, trust_remote_code=True)
            return randomize_(model, seed) if seed else model
        return tiny_model(layout, seed=seed, dtype=dtype)

    return build


TRAINED_DEMO_SHAPE = dict(hidden_size=64, intermediate_size=128, num_layers=4)
"""An earlier default demo width at 4 layers: trained enough in ~2 minutes for methods to separate at W3."""


@pytest.fixture(scope="session")
def trained_demo_dir(tmp_path_factory: pytest.TempPathFactory):
    """One trained demo per test session, shared by every test that compares methods on it."""
    demo = pytest.importorskip("moequant.demo")
    return demo.build_demo(
        tmp_path_factory.mktemp("trained-demo") / "model", steps=500, seed=0, tiny=True, **TRAINED_DEMO_SHAPE
    )


def demo_windows(directory, split: str, count: int, seqlen: int = 64) -> torch.Tensor:
    """`count` consecutive windows of the demo's mixed-domain `split` text, as token ids."""
    from moequant.loading import load_tokenizer

    tokenizer = load_tokenizer(str(directory))
    text = (directory / "data" / "mixed" / f"{split}.txt").read_text()
    return torch.tensor(tokenizer(text)["input_ids"][: count * seqlen]).reshape(count, seqlen)
