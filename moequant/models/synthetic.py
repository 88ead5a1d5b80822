"""Models with random weights built from the real transformers classes.

Tests use tiny shapes of every family; benchmarks use the published shapes of the paper's
models (a few decoder layers) so timings reflect real matrix sizes without downloads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moequant.errors import UsageError

_TINY_COMMON: dict[str, Any] = dict(
    vocab_size=96,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "mixtral": dict(intermediate_size=48, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(
        intermediate_size=48,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        decoder_sparse_step=1,
        mlp_only_layers=[],
    ),
    "qwen3_moe": dict(
        intermediate_size=48,
        moe_intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        head_dim=8,
        decoder_sparse_step=1,
        mlp_only_layers=[],
    ),
    "deepseek_v2": dict(
        num_hidden_layers=3,
        intermediate_size=48,
        moe_intermediate_size=24,
        n_routed_experts=4,
        n_shared_experts=1,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        topk_method="greedy",
        routed_scaling_factor=1.0,
        q_lora_rank=None,
        kv_lora_rank=16,
        qk_rope_head_dim=4,
        qk_nope_head_dim=4,
        v_head_dim=8,
        num_key_value_heads=4,
    ),
    "deepseek_v3": dict(
        num_hidden_layers=3,
        intermediate_size=48,
        moe_intermediate_size=24,
        n_routed_experts=4,
        n_shared_experts=1,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=1.0,
        q_lora_rank=16,
        kv_lora_rank=16,
        qk_rope_head_dim=4,
        qk_nope_head_dim=4,
        v_head_dim=8,
        num_key_value_heads=4,
    ),
    "olmoe": dict(intermediate_size=48, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False),
}

FUSED_FAMILIES = tuple(TINY_CONFIGS)


def tiny_config(family: str, **overrides: Any):
    from transformers import AutoConfig

    if family not in TINY_CONFIGS:
        raise UsageError(f"no synthetic config for family {family!r}; available: {', '.join(FUSED_FAMILIES)}")
    values = {**_TINY_COMMON, **TINY_CONFIGS[family], **overrides}
    return AutoConfig.for_model(family, **values)


def randomize_(model: nn.Module, seed: int, std: float = 0.2) -> nn.Module:
    """Give every parameter seeded, non-trivial values (norms away from 1, router spread).

    Initial norms of exactly 1 and near-zero routers would hide bugs in norm fusion and
    routing, so tests start from weights where every piece matters.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            if "norm" in name and param.dim() == 1:
                param.copy_((1.0 + 0.3 * noise).to(param.dtype))
            else:
                param.copy_((std * noise).to(param.dtype))
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(0.05 * torch.randn(buffer.shape, generator=generator, dtype=torch.float64))
    return model


def tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any) -> nn.Module:
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return randomize_(model, seed).eval()
