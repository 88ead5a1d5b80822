"""Find a decoder's MoE pieces from module types and parameter shapes, whatever the family.

transformers 5 gives most MoE families one experts interface and one decoder-layer shape, so
the walker below reads structure instead of names: the MoE block is the child holding an
`experts` bank beside a router whose weight is [E, H]; shared experts are the block's other
gated FFNs; a shared gate is its [1, H] linear. Whatever it cannot account for (a linear it
does not know, a layer without softmax attention) is refused with one line rather than left
unquantized or rotated approximately. `families.py` keeps only what structure cannot show.
"""

from __future__ import annotations

import inspect

from torch import nn

from moequant.models.base import (
    Attention,
    DecoderLayer,
    DenseMLP,
    ExpertBank,
    FusedExperts,
    ModelAdapter,
    ModuleListExperts,
    MoEBlock,
)
from moequant.models.families import UnreadableRouter, router_for

_PROJECTION_NAMES = {"gate": ("gate_proj", "w1"), "up": ("up_proj", "w3"), "down": ("down_proj", "w2")}
_ATTENTION_NAMES = ("self_attn", "attention", "attn")
ATTENTION_READERS = ("q_proj", "k_proj", "v_proj", "q_a_proj", "kv_a_proj_with_mqa")
_ATTENTION_WRITERS = ("o_proj",)
_ATTENTION_INNER = ("q_b_proj", "kv_b_proj")
_LAYER_NORMS = ("input_layernorm", "post_attention_layernorm")
_FINAL_NORMS = ("norm", "final_layernorm", "ln_f")


class Unsupported(Exception):
    """The model's structure has a part moequant cannot handle exactly; the message says which."""


def _child_linear(module: nn.Module, names: tuple[str, ...]) -> nn.Linear | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Linear):
            return child
    return None


def dense_mlp(module: nn.Module) -> DenseMLP:
    parts = {proj: _child_linear(module, names) for proj, names in _PROJECTION_NAMES.items()}
    missing = [proj for proj, linear in parts.items() if linear is None]
    if missing or not hasattr(module, "act_fn"):
        raise Unsupported(f"{type(module).__name__} is not a gated FFN (missing {missing or ['act_fn']})")
    return DenseMLP(parts["gate"], parts["up"], parts["down"], module.act_fn)


def _is_dense_mlp(module: nn.Module) -> bool:
    try:
        dense_mlp(module)
    except Unsupported:
        return False
    return True


def expert_bank(experts: nn.Module) -> ExpertBank:
    if isinstance(experts, nn.ModuleList):
        return ModuleListExperts([dense_mlp(expert) for expert in experts])
    fused = getattr(experts, "gate_up_proj", None)
    if isinstance(fused, nn.Parameter) and fused.dim() == 3 and isinstance(getattr(experts, "down_proj", None), nn.Parameter):
        try:
            return FusedExperts(experts)
        except NotImplementedError as err:
            raise Unsupported(f"{type(experts).__name__}: {err}") from None
    raise Unsupported(f"unrecognised expert layout {type(experts).__name__}")


def _router_module(block: nn.Module, num_experts: int, hidden: int) -> tuple[str, nn.Module, nn.Parameter]:
    """(name, module, [E, H] weight) of the block's router: a child holding that weight, itself or one level down."""
    for name, child in block.named_children():
        if name == "experts":
            continue
        for holder in (child, *child.children()):
            weight = getattr(holder, "weight", None)
            if isinstance(weight, nn.Parameter) and tuple(weight.shape) == (num_experts, hidden):
                return name, child, weight
    raise Unsupported(f"{type(block).__name__} has no router with an [{num_experts}, {hidden}] weight")


def _top_k(router: nn.Module, block: nn.Module, config: object) -> int:
    for source, name in ((router, "top_k"), (block, "top_k"), (config, "num_experts_per_tok"), (config, "moe_topk")):
        value = getattr(source, name, None)
        if isinstance(value, int):
            return value
    return -1


def moe_block(block: nn.Module, hidden: int, where: str, config: object) -> MoEBlock:
    bank = expert_bank(block.experts)
    router_name, router_module, router_weight = _router_module(block, bank.num_experts, hidden)
    if "input_ids" in inspect.signature(router_module.forward).parameters:
        # DeepSeek-V4's first layers route by a token-id table, not by the hidden state: AGQ's
        # coefficients, σ and EBSS all need a router the hidden state alone drives
        raise Unsupported(f"{where}: the router {type(router_module).__name__} routes by token id (hash routing)")
    shared, shared_modules, shared_gate, known = [], [], None, {"experts", router_name}
    for name, child in block.named_children():
        if name in known or not any(True for _ in child.parameters()):
            continue
        if isinstance(child, nn.Linear) and child.out_features == 1 and child.in_features == hidden:
            shared_gate = child
        elif _is_dense_mlp(child):
            shared.append(dense_mlp(child))
            shared_modules.append(child)
        else:
            raise Unsupported(f"{where}: MoE block part {name!r} ({type(child).__name__}) is not one moequant knows")
    try:
        router = router_for(router_module, router_weight, bank, block)
    except UnreadableRouter as err:
        raise Unsupported(f"{where}: {err}") from None
    router.bypass = tuple(shared_modules)
    return MoEBlock(block, router, bank, shared, shared_gate, _top_k(router_module, block, config))


def _value_source(attn: nn.Module, writer: nn.Linear | None) -> tuple[nn.Linear | None, object]:
    """The linear producing V and, per writer input channel, its row (see `Attention.value_rows`).

    Grouped-query attention repeats kv head g for query heads g·n_rep … g·n_rep + n_rep − 1;
    MLA's `kv_b_proj` holds, per head, the no-rope key rows followed by the value rows.
    """
    import torch

    if writer is None:
        return None, None
    v_proj, kv_b = getattr(attn, "v_proj", None), getattr(attn, "kv_b_proj", None)
    if isinstance(v_proj, nn.Linear) and isinstance(getattr(attn, "head_dim", None), int):
        head_dim, n_rep = attn.head_dim, int(getattr(attn, "num_key_value_groups", 1))
        heads = writer.in_features // head_dim
        kv_head = torch.arange(heads) // n_rep
        rows = (kv_head[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
        value = v_proj
    elif isinstance(kv_b, nn.Linear) and all(hasattr(attn, a) for a in ("num_heads", "qk_nope_head_dim", "v_head_dim")):
        nope, v_dim, heads = attn.qk_nope_head_dim, attn.v_head_dim, attn.num_heads
        rows = (torch.arange(heads)[:, None] * (nope + v_dim) + nope + torch.arange(v_dim)).reshape(-1)
        value = kv_b
    else:
        return None, None
    if rows.numel() != writer.in_features or int(rows.max()) >= value.out_features:
        return None, None
    return value, rows


def attention(attn: nn.Module, hidden: int, known: bool = True) -> Attention:
    """The token mixer's linears by role; an unknown mixer (`known=False`) has no named ones.

    A linear without a known name takes its role from its shape: one that reads the hidden
    width and writes another reads the normed stream (linear-attention and Mamba input
    projections, output gates, sparse-attention indexer keys), one that writes the hidden
    width from another is a writer; one that does neither, or both, stays of unknown role.
    The float64 rotation check of every family (moequant/coverage.py) is what vouches for it.
    """

    def pick(names: tuple[str, ...]) -> dict[str, nn.Linear]:
        return {n: getattr(attn, n) for n in names if known and isinstance(getattr(attn, n, None), nn.Linear)}

    readers, writers, inner = pick(ATTENTION_READERS), pick(_ATTENTION_WRITERS), pick(_ATTENTION_INNER)
    value, rows = _value_source(attn, writers.get("o_proj"))
    seen = {id(m) for group in (readers, writers, inner) for m in group.values()}
    other = {}
    for name, module in attn.named_modules():
        if not isinstance(module, nn.Linear) or id(module) in seen:
            continue
        reads, writes = module.in_features == hidden, module.out_features == hidden
        group = readers if reads and not writes else writers if writes and not reads else other
        group[name] = module
    return Attention(attn, readers, writers, inner, value, rows, other)


def _fold_blockers(module: nn.Module, attn_name: str, mlp_name: str, mixer: Attention, hidden: int) -> list[str]:
    """Parts of a layer that break 'norm → readers, writers → residual' (rotation would not be exact)."""
    blockers = [f"no {name}" for name in _LAYER_NORMS if not isinstance(getattr(module, name, None), nn.Module)]
    # inner linears of unknown role (neither width is the hidden one) never see the rotated
    # stream; one with the hidden width on both sides could be a reader or a writer
    other = [n for n, m in mixer.other.items() if hidden in (m.in_features, m.out_features)]
    if other:
        blockers.append(f"{attn_name} linears of unknown role ({', '.join(other)})")
    for name, child in module.named_children():
        if name in (attn_name, mlp_name, *_LAYER_NORMS) or not any(True for _ in child.parameters()):
            continue
        blockers.append(f"extra residual part {name!r} ({type(child).__name__})")
    return blockers


def decoder_layer(index: int, module: nn.Module, hidden: int, config: object) -> DecoderLayer:
    where = f"layer {index}"
    mlp_name = next((n for n, c in module.named_children() if hasattr(c, "experts")), None)
    if mlp_name is None:
        mlp_name = next((n for n, c in module.named_children() if _is_dense_mlp(c)), None)
    if mlp_name is None:
        raise Unsupported(f"{where} has neither a MoE block nor a gated FFN")
    attn_name = next((n for n in _ATTENTION_NAMES if isinstance(getattr(module, n, None), nn.Module)), None)
    mixers = [n for n, c in module.named_children() if n != mlp_name and any(isinstance(m, nn.Linear) for m in c.modules())]
    if attn_name is None and len(mixers) == 1:
        attn_name, known = mixers[0], False
    elif attn_name is None:
        raise Unsupported(f"{where} has no token mixer moequant can tell apart (parts with linears: {', '.join(mixers) or 'none'})")
    else:
        known = True
    child = getattr(module, mlp_name)
    mlp = moe_block(child, hidden, where, config) if hasattr(child, "experts") else dense_mlp(child)
    mixer = attention(getattr(module, attn_name), hidden, known)
    layer = DecoderLayer(
        index=index,
        module=module,
        input_norm=getattr(module, _LAYER_NORMS[0], None),
        post_attention_norm=getattr(module, _LAYER_NORMS[1], None),
        attention=mixer,
        mlp=mlp,
        mlp_name=mlp_name,
        fold_blockers=_fold_blockers(module, attn_name, mlp_name, mixer, hidden),
    )
    _check_every_linear_known(layer, where)
    return layer


def _check_every_linear_known(layer: DecoderLayer, where: str) -> None:
    """Refuse a layer with a linear no stage would quantize: it would silently stay full precision."""
    attn = layer.attention
    known = {id(m) for group in (attn.readers, attn.writers, attn.inner, attn.other) for m in group.values()}
    mlp = layer.mlp
    parts = [mlp] if isinstance(mlp, DenseMLP) else list(mlp.shared_experts)
    if isinstance(mlp, MoEBlock):
        known.update(id(m) for m in mlp.router.module.modules())
        if mlp.shared_gate is not None:
            known.add(id(mlp.shared_gate))
        if isinstance(mlp.experts, ModuleListExperts):
            parts.extend(mlp.experts.experts)
    for part in parts:
        known.update(id(part.projection(p)) for p in ("gate", "up", "down"))
    unknown = [name for name, m in layer.module.named_modules() if isinstance(m, nn.Linear) and id(m) not in known]
    if unknown:
        raise Unsupported(f"{where} has linears moequant does not know: {', '.join(unknown)}")


def decoder(model: nn.Module) -> nn.Module:
    """The text decoder that holds the layers (`model.model`, or the language model of a multimodal one)."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    if inner is None or not isinstance(getattr(inner, "layers", None), nn.ModuleList):
        raise Unsupported(f"{type(model).__name__} has no decoder with a `layers` list")
    return inner


def discover(model: nn.Module, family: str) -> ModelAdapter:
    inner = decoder(model)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    norm = next((getattr(inner, n) for n in _FINAL_NORMS if isinstance(getattr(inner, n, None), nn.Module)), None)
    if not isinstance(head, nn.Linear) or norm is None:
        raise Unsupported(f"{type(model).__name__} has no final norm and linear lm_head moequant knows")
    hidden = embed.weight.shape[1]
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layers = [decoder_layer(i, layer, hidden, config) for i, layer in enumerate(inner.layers)]
    return ModelAdapter(family, model, layers, embed, norm, head, inner.layers)
