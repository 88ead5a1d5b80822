"""Shapes per family and the CPU training loop of the demo model.

The default shape is narrow and deep (hidden 32 × 10 layers, experts of width 96, a
2048-token vocabulary) on purpose: measured on this project's 2-core machines, narrow deep
models are the ones where 3-bit round-to-nearest visibly hurts held-out perplexity after a
few minutes of training, while wide shallow models of the same budget shrug it off. The
narrower the model and the smaller its vocabulary, the cheaper each step, which is what lets
the demo build fit the workflow's time budget (bench/RESULTS.md has the probes).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DeepseekV3Config, MixtralConfig, PreTrainedConfig, Qwen2MoeConfig

from moequant.demo.corpus import DOMAINS
from moequant.demo.tokenizer import BOS_ID, EOS_ID, PAD_ID
from moequant.models import ModelAdapter, adapt
from moequant.models.routing import capture_routing
from moequant.progress import Ticker

FAMILIES: tuple[str, ...] = ("mixtral", "qwen2_moe", "deepseek_v3")
DEFAULT_STEPS = 1500


@dataclass(frozen=True)
class DemoShape:
    """Model and batch geometry; every field can be overridden through `build_demo`."""

    hidden_size: int = 32
    num_layers: int = 10
    intermediate_size: int = 96
    num_heads: int = 2
    num_kv_heads: int = 1
    num_experts: int = 8
    top_k: int = 2
    vocab_size: int = 2048
    seq_len: int = 256
    batch_size: int = 8


DEFAULT_SHAPE = DemoShape()
TINY_SHAPE = DemoShape(
    hidden_size=32,
    num_layers=2,
    intermediate_size=32,
    num_heads=2,
    num_kv_heads=1,
    num_experts=4,
    top_k=2,
    vocab_size=512,
    seq_len=64,
    batch_size=4,
)


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser settings; the router balance loss is per layer so no layer starves whole experts."""

    steps: int = DEFAULT_STEPS
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.1
    aux_loss_coef: float = 0.02
    grad_clip: float = 1.0


def model_config(family: str, shape: DemoShape) -> PreTrainedConfig:
    """A transformers config of `family` at `shape` (routed experts of `intermediate_size` each).

    Qwen2-MoE gets one shared expert of the same width; DeepSeek-V3 gets one shared
    expert, a dense first layer (`first_k_dense_replace=1`) twice as wide, and the
    smallest MLA that keeps its code path (no query compression, a latent of hidden/2).
    """
    common = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        max_position_embeddings=shape.seq_len,
        num_experts_per_tok=shape.top_k,
        tie_word_embeddings=False,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        rms_norm_eps=1e-6,
    )
    if family == "mixtral":
        return MixtralConfig(
            **common,
            intermediate_size=shape.intermediate_size,
            num_key_value_heads=shape.num_kv_heads,
            num_local_experts=shape.num_experts,
        )
    if family == "qwen2_moe":
        return Qwen2MoeConfig(
            **common,
            intermediate_size=shape.intermediate_size,
            moe_intermediate_size=shape.intermediate_size,
            shared_expert_intermediate_size=shape.intermediate_size,
            num_key_value_heads=shape.num_kv_heads,
            num_experts=shape.num_experts,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            norm_topk_prob=False,
        )
    if family == "deepseek_v3":
        head_dim = shape.hidden_size // shape.num_heads
        return DeepseekV3Config(
            **common,
            intermediate_size=2 * shape.intermediate_size,
            moe_intermediate_size=shape.intermediate_size,
            num_key_value_heads=shape.num_heads,
            n_routed_experts=shape.num_experts,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            routed_scaling_factor=1.0,
            q_lora_rank=None,
            kv_lora_rank=shape.hidden_size // 2,
            qk_rope_head_dim=head_dim // 2,
            qk_nope_head_dim=head_dim - head_dim // 2,
            v_head_dim=head_dim,
            num_mtp_layers=0,
        )
    raise ValueError(f"unknown family {family!r}")


def new_model(family: str, shape: DemoShape, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model_config(family, shape), dtype=torch.float32)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of a build, without leaking the switch to callers."""
    previous, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warmup, then cosine decay to `min_lr_fraction` of the peak."""
    warmup = max(1, int(settings.steps * settings.warmup_fraction))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, settings.steps - warmup)
    floor = settings.min_lr_fraction
    return settings.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def sample_batch(streams: Mapping[str, torch.Tensor], shape: DemoShape, step: int, generator: torch.Generator) -> torch.Tensor:
    """[batch, seq_len] windows; rows cycle through the domains, start offsets come from `generator`.

    Every window holds one domain only, so routers can learn domain-specific experts.
    """
    rows = []
    for row in range(shape.batch_size):
        stream = streams[DOMAINS[(step * shape.batch_size + row) % len(DOMAINS)]]
        start = int(torch.randint(stream.numel() - shape.seq_len + 1, (1,), generator=generator))
        rows.append(stream[start : start + shape.seq_len])
    return torch.stack(rows)


def balance_loss(adapter: ModelAdapter, records: Mapping[int, list[tuple[torch.Tensor, ...]]]) -> torch.Tensor:
    """Switch-Transformer balance loss computed per MoE layer, then averaged over layers.

    transformers' own auxiliary loss pools counts over all layers, which lets individual
    layers leave experts unused; balancing each layer over a mixed-domain batch keeps
    every expert alive while each domain alone still routes unevenly.
    """
    losses = []
    num_experts = adapter.num_experts
    for layer in adapter.moe_layers:
        for ids, _coeffs, logits in records[layer.index]:
            probs = torch.softmax(logits.float(), dim=-1).mean(dim=0)
            counts = torch.bincount(ids.reshape(-1), minlength=num_experts).float()
            losses.append(num_experts * torch.sum(probs * counts / counts.sum()))
    return torch.stack(losses).mean()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _name, param in sorted(model.named_parameters()):
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    model: nn.Module,
    streams: Mapping[str, torch.Tensor],
    shape: DemoShape,
    settings: TrainSettings,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Train in place; returns the language-model loss of every step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        _param_groups(model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.95), eps=1e-8
    )
    adapter = adapt(model)
    losses: list[float] = []
    model.train()
    ticker = Ticker("build-demo", settings.steps, "steps", enabled=progress)
    with capture_routing(adapter, keep_logits=True) as records:
        for step in range(settings.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, settings)
            batch = sample_batch(streams, shape, step, generator)
            for calls in records.values():
                calls.clear()
            lm_loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            loss = lm_loss + settings.aux_loss_coef * balance_loss(adapter, records)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(lm_loss.detach().item())
            ticker.update(1, lambda: f"loss {sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return losses
