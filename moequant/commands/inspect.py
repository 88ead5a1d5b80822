"""`moequant inspect`: what the adapter sees in a model, before any stage runs on it."""

from __future__ import annotations

import argparse
import json

from moequant.models import adapt
from moequant.loading import load_model

NAME = "inspect"
HELP = "Show a model's MoE structure as moequant's adapters see it (family, layers, experts, layout)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face id, model directory or quantized checkpoint")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code")


def describe(model) -> dict:
    adapter = adapt(model)
    layers = []
    for layer in adapter.layers:
        entry: dict = {"index": layer.index, "kind": "moe" if layer.is_moe else "dense"}
        if layer.is_moe:
            block = layer.mlp
            entry.update(
                experts=block.experts.num_experts,
                top_k=block.top_k,
                layout=block.experts.layout,
                expert_intermediate=block.experts.intermediate_size,
                shared_experts=len(block.shared_experts),
                shared_gate=block.shared_gate is not None,
            )
        if layer.attention.other:
            entry["plain_gptq_linears"] = sorted(layer.attention.other)
        if layer.fold_blockers:
            entry["fold_blockers"] = layer.fold_blockers
        layers.append(entry)
    return {
        "family": adapter.family,
        "hidden_size": adapter.embed_tokens.embedding_dim,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": layers,
    }


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    print(json.dumps(describe(model), indent=2))
    return 0
