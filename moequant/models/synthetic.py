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


_TINY_ANY: dict[str, Any] = dict(
    _TINY_COMMON,
    num_hidden_layers=3,
    intermediate_size=48,
    moe_intermediate_size=24,
    shared_expert_intermediate_size=24,
    head_dim=8,
    num_local_experts=4,
    num_experts=4,
    n_routed_experts=4,
    moe_num_experts=4,
    num_experts_per_tok=2,
    moe_topk=2,
    moe_k=2,
    moe_num_shared_experts=1,
    n_shared_experts=1,
    n_group=1,
    topk_group=1,
    first_k_dense_replace=1,
    decoder_sparse_step=1,
    mlp_only_layers=[],
    q_lora_rank=16,
    kv_lora_rank=16,
    qk_rope_head_dim=4,
    qk_nope_head_dim=4,
    v_head_dim=8,
    sliding_window=16,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
)
"""Small values for the size fields MoE configs share; each is applied only where the family's
config has that field, so one table shrinks every family."""

_TINY_QUIRKS: dict[str, dict[str, Any]] = {
    "bailing_hybrid": dict(n_group=1, topk_group=1, num_experts_per_token=2),
    "deepseek_v32": dict(num_key_value_heads=4),
    "glm_moe_dsa": dict(num_key_value_heads=4),
    "jamba": dict(attn_layer_offset=1, attn_layer_period=2, expert_layer_offset=0, expert_layer_period=1),
    "dots3_note": dict(num_key_value_heads=4),
    "dots3_note_text": dict(num_key_value_heads=4),
    "granitemoehybrid": dict(mamba_n_heads=8, mamba_d_head=8, mamba_d_state=16, mamba_chunk_size=16),
    "lfm2_moe": dict(layer_types=["conv", "full_attention", "conv"], num_dense_layers=1),
    "qwen4_exp": dict(indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=8, indexer_budget=8, indexer_compress_ratio=4),
    "qwen4_exp_text": dict(indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=8, indexer_budget=8, indexer_compress_ratio=4),
    "zaya": dict(num_experts_per_tok=1),
}
"""What a family's validators demand of a small config beyond the shared fields (its defaults
are sized for the real model: head counts that must match, indexer sizes left unset)."""

_MAX_TINY_PARAMETERS = 4_000_000


def tiny_any_config(model_type: str):
    """A small config of any model type, from its own config class: shared fields shrunk, the rest default.

    Per-layer lists (`layer_types` and the like) keep the family's own pattern, cut to the
    tiny depth. A family whose defaults stay large after that is refused (see
    `check_tiny_size`), never built.
    """
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    text_name = next((n for n in ("text_config",) if getattr(default, n, None) is not None), None)
    target = getattr(default, text_name) if text_name else default
    fields = vars(target)
    values = {k: v for k, v in _TINY_ANY.items() if k in fields}
    if "qk_rope_head_dim" in fields and "qk_nope_head_dim" in fields:
        values.pop("head_dim", None)  # MLA derives its head sizes from the rope / no-rope split
    depth = fields.get("num_hidden_layers", -1)
    pattern = fields.get("layer_types")
    settable = not isinstance(getattr(type(target), "layer_types", None), property)
    if isinstance(pattern, list) and pattern and settable:
        firsts = [pattern.index(kind) for kind in dict.fromkeys(pattern)]
        values["num_hidden_layers"] = max(values.get("num_hidden_layers", 3), min(8, max(firsts) + 1))
        values["layer_types"] = pattern[: values["num_hidden_layers"]]
    for key, value in fields.items():
        if isinstance(value, list) and len(value) == depth and key not in values and key != "layer_types":
            values[key] = None
    values.update(_TINY_QUIRKS.get(model_type, {}))
    merged = {**target.to_dict(), **values}
    per_layer = merged.get("per_layer_config")
    if isinstance(per_layer, dict):  # overrides keyed by layer index ("05" in to_dict), cut to the tiny depth
        depth = merged.get("num_hidden_layers", 3)
        values["per_layer_config"] = {k: v for k, v in per_layer.items() if int(k) < depth}
    from huggingface_hub.errors import StrictDataclassError

    try:
        if text_name:
            return AutoConfig.for_model(model_type, **{text_name: {**merged, **values}})
        return AutoConfig.for_model(model_type, **values)
    except (ValueError, StrictDataclassError) as err:  # the family's own validators
        cause = err.__cause__ or err
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UsageError(f"{model_type}: no small config passes the family's own checks ({reason}); not verified here") from None


def check_tiny_size(config: Any) -> int:
    """The parameter count of `config`'s model, counted on the meta device; refuses oversized ones."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    count = sum(p.numel() for p in model.parameters())
    if count > _MAX_TINY_PARAMETERS:
        raise UsageError(f"{config.model_type}: a tiny instance still has {count:,} parameters (defaults the shared fields do not shrink)")
    return count


def tiny_any_model(model_type: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A tiny seeded instance of any model type (see `tiny_any_config`), real transformers modeling code."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type) if model_type in TINY_CONFIGS else tiny_any_config(model_type)
    check_tiny_size(config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return randomize_(model, seed).eval()


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


PAPER_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "mixtral-8x7b": (
        "mixtral",
        dict(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            num_local_experts=8,
            num_experts_per_tok=2,
            max_position_embeddings=32768,
        ),
    ),
    "deepseek-moe-16b": (
        "deepseek_v2",
        dict(
            vocab_size=102400,
            hidden_size=2048,
            intermediate_size=10944,
            moe_intermediate_size=1408,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=16,
            n_routed_experts=64,
            n_shared_experts=2,
            num_experts_per_tok=6,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
            topk_method="greedy",
            routed_scaling_factor=1.0,
            q_lora_rank=None,
            kv_lora_rank=512,
            qk_rope_head_dim=64,
            qk_nope_head_dim=64,
            v_head_dim=128,
            max_position_embeddings=4096,
        ),
    ),
    "qwen1.5-moe-a2.7b": (
        "qwen2_moe",
        dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=5632,
            moe_intermediate_size=1408,
            shared_expert_intermediate_size=5632,
            num_hidden_layers=24,
            num_attention_heads=16,
            num_key_value_heads=16,
            num_experts=60,
            num_experts_per_tok=4,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            max_position_embeddings=8192,
        ),
    ),
}
"""Published sizes of the paper's three models. DeepSeek-MoE-16B's attention is plain
multi-head attention; it is approximated by DeepSeek-V2's class with a wide KV rank so the
MoE part (64 experts of 1408, 2 shared, top-6, dense first layer) has its real shape."""


def paper_shape_model(name: str, num_layers: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any):
    """The real shape of one of the paper's models with `num_layers` decoder layers of random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if name not in PAPER_SHAPES:
        raise UsageError(f"unknown paper shape {name!r}; available: {', '.join(PAPER_SHAPES)}")
    family, values = PAPER_SHAPES[name]
    config = AutoConfig.for_model(family, **{**values, "num_hidden_layers": num_layers, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def full_layer_count(name: str) -> int:
    return int(PAPER_SHAPES[name][1]["num_hidden_layers"])
