"""AWQ and MoEQuant+ (AWQ with affinity-guided statistics and loss) over one decoder layer (method §7).

Scaling groups, each searched on the inputs the already-quantized part of the layer
produces (the same sequential order as GPTQ), folded so the floating-point function is
unchanged, then clipped and quantized:
1. attention readers (q/k/v or MLA's q_a/kv_a) ← the input norm;
2. MLA inner linears: clip search only (their norms are internal to the attention);
3. the attention writer (o_proj) ← the value rows that feed it, scales tied across the
   query heads of one kv group so the fold stays exact under GQA;
4. the whole MoE input group (router, shared-expert gate, every routed and shared expert's
   gate/up) ← the post-attention norm, with ONE scale vector: the norm is shared, so a
   per-expert scale could not be folded anywhere; the dense MLP of dense layers likewise;
5. each expert's down ← the rows of its own up (act(g)·u is linear in u): one scale per expert.
With `weighted=True` (agq_awq) every routed expert's tokens count with their routing
coefficient c in both mean|x| and the search loss; Qwen's shared expert uses
c = sigmoid(shared gate), DeepSeek's shared experts c = 1. With all c equal the two
algorithms take identical decisions. Decisions are written down in docs/awq.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from moequant.models import PROJECTIONS, DenseMLP, MoEBlock, adapt
from moequant.models.norms import norm_form
from moequant.quant.awq_search import (
    AWQConfig,
    clip_and_quantize,
    evenly,
    scaled_fake_quant,
    search_scales,
    weighted_mean_abs,
)
from moequant.quant.config import QuantConfig
from moequant.quant.driver import LayerContext, stream_quantize
from moequant.quant.layer_store import LayerStore
from moequant.quant.journal import LayerJournal
from moequant.quant.algorithm import Algorithm
from moequant.quant.report import QuantResult, ReportRow
from moequant.quant.targets import Target

WORK_DTYPE = torch.float32
"""Searches run in float32 whatever the model dtype; the chosen scales are folded in the model's dtype."""


@dataclass
class Tokens:
    """The calibration tokens one member (an expert, or a whole linear) sees, and how much each counts."""

    index: torch.Tensor
    weight: torch.Tensor
    coeff: torch.Tensor | None
    usable: bool

    @property
    def count(self) -> int:
        return int(self.index.numel())

    @property
    def mass(self) -> float:
        return float(self.count) if self.coeff is None else float(self.coeff.double().sum())


@dataclass
class FFNStack:
    """Routed experts (B = E) or one dense/shared FFN (B = 1) as gate/up/down weight stacks."""

    gate: Target
    up: Target
    down: Target
    act_fn: Callable[[torch.Tensor], torch.Tensor]
    up_module: nn.Linear | None
    routed: bool


def _ffn(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, act) -> torch.Tensor:
    return (act(x @ gate.t()) * (x @ up.t())) @ down.t()


def _fold_into_norm(norm: nn.Module, s: torch.Tensor) -> None:
    """norm(x)/s: the norm's gain (and bias, if any) divided by s; a (1 + weight) gain keeps its form."""
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape != s.shape:
        raise NotImplementedError(f"{type(norm).__name__} has no per-channel weight to fold AWQ scales into")
    form = norm_form(norm, weight.shape[0])[0]
    offset = form.offset if form is not None else 0.0
    if offset:
        weight.data.copy_(((offset + weight.data.double()) / s.double() - offset).to(weight.dtype))
        return
    weight.data.div_(s.to(weight.dtype))
    bias = getattr(norm, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.data.div_(s.to(bias.dtype))


def _scale_columns(target: Target, s: torch.Tensor) -> None:
    """W ← W·diag(s) for every member; `s` is [in] (shared) or [B, in] (per member)."""
    w = target.read()
    target.write(w * s.reshape(-1, 1, w.shape[-1]).to(w.dtype))


class LayerRun:
    """AWQ applied to the decoder layer of one `LayerContext`."""

    def __init__(self, ctx: LayerContext, settings: AWQConfig, weighted: bool, apply_quantization: bool) -> None:
        self.ctx = ctx
        self.settings = settings
        self.weighted = weighted
        self.apply_quantization = apply_quantization
        self.spec = ctx.config.grid
        self.search_spec = settings.search_grid(self.spec)
        self.min_tokens = max(1, ctx.config.run.min_tokens)

    # calibration data -------------------------------------------------------------------

    def collect(self, modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
        """Every calibration token each module receives, as [T, in] (one layer forward per batch)."""
        seen: dict[str, list[torch.Tensor]] = {}
        for inputs in self.ctx.each_batch(modules):
            for name, x in inputs.items():
                seen.setdefault(name, []).append(x.reshape(-1, x.shape[-1]))
        return {name: torch.cat(parts) for name, parts in seen.items()}

    def all_tokens(self, x: torch.Tensor) -> Tokens:
        ones = torch.ones(x.shape[0], dtype=WORK_DTYPE, device=x.device)
        return Tokens(torch.arange(x.shape[0], device=x.device), ones, None, x.shape[0] >= self.min_tokens)

    def weighted_tokens(self, index: torch.Tensor, coeff: torch.Tensor) -> Tokens:
        coeff = coeff.to(WORK_DTYPE)
        weight = coeff if self.weighted else torch.ones_like(coeff)
        return Tokens(index, weight, coeff, index.numel() >= self.min_tokens)

    def assign(self, mlp: MoEBlock | DenseMLP, stacks: list[FFNStack], x: torch.Tensor) -> list[list[Tokens]]:
        """Per FFN stack, per member: the tokens it computes on, with the current router and shared gate."""
        if isinstance(mlp, DenseMLP):
            return [[self.all_tokens(x)]]
        ids, coeffs = mlp.router.route(x)
        routed = []
        for expert in range(mlp.experts.num_experts):
            token, slot = torch.where(ids == expert)
            routed.append(self.weighted_tokens(token, coeffs[token, slot]))
        shared_c = mlp.shared_coefficient(x).reshape(-1)
        everyone = torch.arange(x.shape[0], device=x.device)
        return [routed if stack.routed else [self.weighted_tokens(everyone, shared_c)] for stack in stacks]

    # quantization -----------------------------------------------------------------------

    def quantize(self, target: Target, inputs: list[torch.Tensor], tokens: list[Tokens]) -> None:
        """Clip-search and quantize `target` on its (already scaled) inputs; record codes and report rows."""
        if not self.apply_quantization:
            return
        w = target.read().to(self.ctx.device)
        usable = [x if t.usable else None for x, t in zip(inputs, tokens)]
        result = clip_and_quantize(w, usable, [t.weight for t in tokens], self.spec, self.settings)
        target.write(result.weight.dequantize())
        rows = [
            ReportRow(
                layer=target.layer,
                module=target.module,
                expert=member if target.is_experts else None,
                tokens=t.count,
                mass=t.mass,
                loss=float(result.loss[member]),
                damp=math.nan,
                fallback="starved" if bool(result.starved[member]) else "",
            )
            for member, t in enumerate(tokens)
        ]
        self.ctx.result.add(target.address, result.weight, rows)

    def scale_rows(self, target: Target, s: torch.Tensor, module: nn.Linear | None) -> None:
        """Rows of the producing linear ← rows / s, [B, out]; on its quantized grid when already quantized.

        Dividing a whole row by a constant keeps its codes and divides its grid scales, so
        a quantized producer stays exactly on its (rescaled) grid.
        """
        quantized = self.ctx.result.weights.get(target.address)
        if quantized is None:
            w = target.read()
            target.write(w / s[:, :, None].to(w.dtype))
        else:
            quantized.scale.div_(s[:, :, None].to(quantized.scale.device, quantized.scale.dtype))
            target.write(quantized.unpacked().dequantize())
        if module is not None and module.bias is not None:
            module.bias.data.div_(s[0].to(module.bias.dtype))

    # scaling groups ---------------------------------------------------------------------

    def linear_group(
        self,
        targets: list[Target],
        x: torch.Tensor,
        stat: torch.Tensor,
        expand: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Best scales for linears reading `x` [T, in]: loss = SSE of their stacked outputs.

        `expand` maps the searched scales to the linears' input channels when they are tied.
        """
        w = torch.cat([t.read().to(WORK_DTYPE) for t in targets], dim=1)
        xs = x[evenly(x.shape[0], self.settings.awq_search_tokens, x.device)].to(WORK_DTYPE)
        reference = xs @ w[0].t()
        expand = expand or (lambda s: s)

        def loss(s: torch.Tensor) -> torch.Tensor:
            q = scaled_fake_quant(w, expand(s), self.search_spec)
            return (xs @ q[0].t() - reference).square().sum().reshape(1)

        return search_scales(stat[None].to(WORK_DTYPE), loss, self.settings).scales[0]

    def attention(self) -> None:
        layer, targets = self.ctx.layer, self.ctx.targets
        attn = layer.attention
        if attn.readers:
            readers = [targets.linear(m) for m in attn.readers.values()]
            name, first = next(iter(attn.readers.items()))
            x = self.collect({name: first})[name]
            s = self.linear_group(readers, x, x.abs().to(WORK_DTYPE).mean(0))
            _fold_into_norm(layer.input_norm, s)
            for target in readers:
                _scale_columns(target, s)
            xs = x / s.to(x.dtype)
            for target in readers:
                self.quantize(target, [xs], [self.all_tokens(xs)])
        for name, module in attn.inner.items():
            x = self.collect({name: module})[name]
            self.quantize(targets.linear(module), [x], [self.all_tokens(x)])
        for name, module in attn.writers.items():
            x = self.collect({name: module})[name]
            writer = targets.linear(module)
            if attn.value is not None and attn.value_rows is not None and len(attn.writers) == 1:
                x = self.fold_writer(writer, x)
            self.quantize(writer, [x], [self.all_tokens(x)])

    def fold_writer(self, writer: Target, x: torch.Tensor) -> torch.Tensor:
        """o_proj input scales folded into the value rows; returns the writer's inputs after folding."""
        attn = self.ctx.layer.attention
        assert attn.value is not None and attn.value_rows is not None
        rows = attn.value_rows.to(x.device)
        unique, inverse = torch.unique(rows, return_inverse=True)
        per_channel = x.abs().to(WORK_DTYPE).mean(0)
        counts = torch.bincount(inverse, minlength=unique.numel()).to(WORK_DTYPE)
        stat = torch.zeros(unique.numel(), dtype=WORK_DTYPE, device=x.device).index_add_(0, inverse, per_channel)
        stat = stat / counts
        s_value = self.linear_group([writer], x, stat, expand=lambda s: s[:, inverse])
        factors = torch.ones(attn.value.out_features, dtype=WORK_DTYPE, device=x.device)
        factors[unique] = s_value
        self.scale_rows(self.ctx.targets.linear(attn.value), factors[None], attn.value)
        s = s_value[inverse]
        _scale_columns(writer, s)
        return x / s.to(x.dtype)

    def stacks(self, mlp: MoEBlock | DenseMLP) -> list[FFNStack]:
        targets = self.ctx.targets
        dense = [mlp] if isinstance(mlp, DenseMLP) else mlp.shared_experts
        stacks = [FFNStack(*targets.dense(m, PROJECTIONS), m.act_fn, m.up, routed=False) for m in dense]
        if isinstance(mlp, MoEBlock):
            stacks.insert(0, FFNStack(*targets.experts(PROJECTIONS), mlp.experts.act_fn, None, routed=True))
        return stacks

    def mlp(self) -> None:
        layer = self.ctx.layer
        mlp = layer.mlp
        module = layer.module.get_submodule(layer.mlp_name)
        stacks = self.stacks(mlp)
        x = self.collect({"mlp": module})["mlp"]
        s = self.mlp_input_scales(stacks, self.assign(mlp, stacks, x), x)
        _fold_into_norm(layer.post_attention_norm, s)
        if isinstance(mlp, MoEBlock):
            mlp.router.linear_weight.data.mul_(s.to(mlp.router.linear_weight.dtype))
            if mlp.shared_gate is not None:
                mlp.shared_gate.weight.data.mul_(s.to(mlp.shared_gate.weight.dtype))
        for stack in stacks:
            _scale_columns(stack.gate, s)
            _scale_columns(stack.up, s)
        x = x / s.to(x.dtype)
        for target in self.ctx.targets.routing():
            self.quantize(target, [x], [self.all_tokens(x)])
        members = self.assign(mlp, stacks, x)
        for stack, tokens in zip(stacks, members):
            inputs = [x[t.index] for t in tokens]
            self.quantize(stack.gate, inputs, tokens)
            self.quantize(stack.up, inputs, tokens)
        x = self.collect({"mlp": module})["mlp"]
        for stack, tokens in zip(stacks, self.assign(mlp, stacks, x)):
            self.down(stack, tokens, x)

    def mlp_input_scales(self, stacks: list[FFNStack], members: list[list[Tokens]], x: torch.Tensor) -> torch.Tensor:
        """One scale for everything reading the post-attention norm; loss = Σ weighted FFN-output SSE."""
        omega = torch.zeros(x.shape[0], dtype=WORK_DTYPE, device=x.device)
        for tokens in members:
            for t in tokens:
                if t.usable:
                    omega.index_add_(0, t.index, t.weight)
        stat = weighted_mean_abs(x.to(WORK_DTYPE), omega)
        prepared = []
        for stack, tokens in zip(stacks, members):
            gate_up = torch.cat([stack.gate.read(), stack.up.read()], dim=1).to(WORK_DTYPE)
            down = stack.down.read().to(WORK_DTYPE)
            samples = []
            for member, t in enumerate(tokens):
                if not t.usable:
                    continue
                pick = evenly(t.count, self.settings.awq_search_tokens, x.device)
                xb = x[t.index[pick]].to(WORK_DTYPE)
                size = gate_up.shape[1] // 2
                reference = _ffn(xb, gate_up[member, :size], gate_up[member, size:], down[member], stack.act_fn)
                samples.append((member, xb, t.weight[pick], reference))
            prepared.append((stack, gate_up, down, samples))

        def loss(s: torch.Tensor) -> torch.Tensor:
            total = torch.zeros(1, dtype=WORK_DTYPE, device=x.device)
            for stack, gate_up, down, samples in prepared:
                q = scaled_fake_quant(gate_up, s, self.search_spec)
                size = q.shape[1] // 2
                for member, xb, weight, reference in samples:
                    y = _ffn(xb, q[member, :size], q[member, size:], down[member], stack.act_fn)
                    total += (weight[:, None] * (y - reference).square()).sum()
            return total

        return search_scales(stat[None], loss, self.settings).scales[0]

    def down(self, stack: FFNStack, tokens: list[Tokens], x: torch.Tensor) -> None:
        """Per-member scales for down, folded into the rows of the same member's up projection."""
        gate, up = stack.gate.read().to(WORK_DTYPE), stack.up.read().to(WORK_DTYPE)
        down = stack.down.read().to(WORK_DTYPE)
        members, inner = down.shape[0], down.shape[-1]
        hidden = []
        stat = torch.zeros(members, inner, dtype=WORK_DTYPE, device=x.device)
        for member, t in enumerate(tokens):
            xb = x[t.index].to(WORK_DTYPE)
            h = stack.act_fn(xb @ gate[member].t()) * (xb @ up[member].t())
            hidden.append(h)
            if t.usable:
                stat[member] = weighted_mean_abs(h, t.weight)
        samples = []
        for member, (t, h) in enumerate(zip(tokens, hidden)):
            if t.usable:
                pick = evenly(t.count, self.settings.awq_search_tokens, x.device)
                samples.append((member, h[pick], t.weight[pick], h[pick] @ down[member].t()))

        def loss(s: torch.Tensor) -> torch.Tensor:
            q = scaled_fake_quant(down, s, self.search_spec)
            total = torch.zeros(members, dtype=WORK_DTYPE, device=x.device)
            for member, h, weight, reference in samples:
                total[member] = (weight[:, None] * (h @ q[member].t() - reference).square()).sum()
            return total

        s = search_scales(stat, loss, self.settings).scales
        self.scale_rows(stack.up, s, stack.up_module)
        _scale_columns(stack.down, s)
        self.quantize(stack.down, [h / s[m] for m, h in enumerate(hidden)], tokens)


class AWQLayer:
    """One decoder layer under AWQ (`weighted=False`) or MoEQuant+ (`weighted=True`).

    `apply_quantization=False` searches and folds the scales but leaves every weight in
    floating point: the model then computes the same function, which is what the folding
    tests check.
    """

    def __init__(self, weighted: bool, apply_quantization: bool = True) -> None:
        self.weighted = weighted
        self.apply_quantization = apply_quantization

    @torch.no_grad()
    def __call__(self, ctx: LayerContext) -> None:
        run = LayerRun(ctx, ctx.config.options, self.weighted, self.apply_quantization)
        run.attention()
        run.mlp()


def _algorithm(weighted: bool) -> Callable[..., QuantResult]:
    def quantize(
        model: nn.Module,
        calib: torch.Tensor | None,
        config: QuantConfig[AWQConfig],
        journal: LayerJournal | None = None,
        store: LayerStore | None = None,
    ) -> QuantResult:
        assert calib is not None
        adapt(model).check_foldable("AWQ")
        return stream_quantize(model, calib, config, AWQLayer(weighted), journal, store)

    return quantize


ALGORITHMS = (
    Algorithm(
        "awq", AWQConfig, _algorithm(False), needs_calibration=True, description="activation-aware weight quantization"
    ),
    Algorithm(
        "agq_awq",
        AWQConfig,
        _algorithm(True),
        needs_calibration=True,
        description="MoEQuant+: AWQ with routing-coefficient-weighted statistics and loss",
    ),
)
