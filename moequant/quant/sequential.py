"""GPTQ and AGQ-GPTQ over one decoder layer, stage by stage (method §6).

Stages, in the order their inputs become final: attention readers → attention inner (MLA)
→ attention writers → routing (router, shared gate) → every gate/up (routed experts and
shared experts) → every down. Each attention stage is one calibration pass; the MoE block's
input is final after the writers, so one pass captures it for the three MoE stages. Routing
coefficients for AGQ come from the already-quantized router and shared gate, so they
match what the quantized model computes. Linears that receive the very same input tensor
share one Hessian and are solved as one stacked matrix; all experts of a projection are
solved in one batched call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from moequant.errors import UsageError, require
from moequant.models import ATTENTION_READERS, PROJECTIONS, DenseMLP, MoEBlock
from moequant.quant.config import QuantConfig
from moequant.quant.driver import LayerContext, stream_quantize
from moequant.quant.layer_store import LayerStore
from moequant.quant.journal import LayerJournal
from moequant.quant.gptq import gptq_solve
from moequant.quant.grid import QuantizedWeight
from moequant.quant.hessian import HessianStack, MemberGroups, check_finite_activations
from moequant.quant.algorithm import Algorithm
from moequant.quant.options import check_choices, option
from moequant.quant.report import QuantResult, ReportRow
from moequant.quant.targets import Target

AGQ_WEIGHTS = ("c", "c2")

Weighting = str | None


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ's own options, which AGQ has too."""

    damp: float = option(0.01, help="damping as a fraction of mean(diag H)")
    blocksize: int = option(128, help="lazy-update block size")
    act_order: bool = option(False, help="quantize columns by decreasing diag(H)")
    all_experts: bool = option(
        False, help="every calibration token enters every expert's Hessian (outputs stay routed)"
    )

    def __post_init__(self) -> None:
        require(self.damp >= 0, f"damp must be non-negative (a fraction of mean(diag H)), got {self.damp!r}")
        require(self.blocksize >= 1, f"blocksize must be at least 1, got {self.blocksize!r}")
        require(isinstance(self.all_experts, bool), f"all_experts must be true or false, got {self.all_experts!r}")


@dataclass(frozen=True)
class AGQConfig(GPTQConfig):
    """AGQ: GPTQ whose expert Hessians weigh each token by its routing coefficient."""

    agq_weight: str = option("c", help="token weight in an expert's Hessian: c or c²", choices=AGQ_WEIGHTS)
    agq_projections: tuple[str, ...] = option(
        PROJECTIONS, help="expert projections whose Hessian AGQ weights (e.g. up,down = gate off)", choices=PROJECTIONS
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "agq_projections", tuple(self.agq_projections))
        check_choices(self)


def hessian_dtype(config: QuantConfig) -> torch.dtype:
    return torch.float64 if config.run.hessian_dtype == "float64" else torch.float32


HessianObserver = Callable[[LayerContext, list[Target], HessianStack], None]


def solve_targets(ctx: LayerContext, targets: list[Target], hessian: HessianStack) -> None:
    """Quantize `targets` (same input, same members) against one Hessian stack and write them back."""
    config, options = ctx.config, ctx.config.options
    hessian.check_finite(ctx.where(", ".join(t.module for t in targets)))
    observer = ctx.state.get("on_hessian")
    if observer is not None:
        observer(ctx, targets, hessian)
    weights = [t.read() for t in targets]
    stacked = torch.cat([w.to(ctx.device) for w in weights], dim=1)
    starved = hessian.tokens < config.run.min_tokens
    result = gptq_solve(
        stacked,
        hessian.H,
        config.grid,
        damp=options.damp,
        blocksize=options.blocksize,
        act_order=options.act_order,
        starved=starved,
        chunk=config.run.expert_chunk,
    )
    start = 0
    for target, w in zip(targets, weights):
        rows = slice(start, start + w.shape[1])
        start += w.shape[1]
        q = result.weight
        part = QuantizedWeight(q.codes[:, rows], q.scale[:, rows], q.zero[:, rows], q.bits, q.sym)
        target.write(part.dequantize())
        loss = result.loss[:, rows].sum(dim=1)
        report = [
            ReportRow(
                layer=target.layer,
                module=target.module,
                expert=member if target.is_experts else None,
                tokens=int(hessian.tokens[member]),
                mass=float(hessian.mass[member]),
                loss=float(loss[member]),
                damp=float(result.damp[member]),
                fallback=("starved" if bool(starved[member]) else "cholesky") if bool(result.fallback[member]) else "",
            )
            for member in range(result.members)
        ]
        ctx.result.add(target.address, part, report)


def linear_stage(ctx: LayerContext, targets: list[Target], modules: dict[str, torch.nn.Module]) -> None:
    """Plain GPTQ for linears hooked directly; linears fed the same tensor share a Hessian."""
    hessians: dict[tuple[str, ...], HessianStack] = {}
    for inputs in ctx.each_batch(modules):
        shared: dict[int, list[str]] = {}
        for name, x in inputs.items():
            shared.setdefault(id(x), []).append(name)
        for names in shared.values():
            x = inputs[names[0]]
            key = tuple(names)
            if key not in hessians:
                hessians[key] = HessianStack(1, x.shape[-1], hessian_dtype(ctx.config), ctx.device)
            hessians[key].add(0, x)
    by_module = {t.module: t for t in targets}
    for names, hessian in hessians.items():
        solve_targets(ctx, [by_module[n] for n in names], hessian)


class GPTQLayer:
    """One decoder layer under GPTQ (`agq=False`) or affinity-guided GPTQ (`agq=True`)."""

    def __init__(self, agq: bool, on_hessian: HessianObserver | None = None) -> None:
        self.agq = agq
        self.on_hessian = on_hessian

    def weighting(self, config: QuantConfig[AGQConfig], proj: str, gated: bool) -> Weighting:
        """How tokens are weighted in H for an expert projection: None (plain), 'c' or 'c2'."""
        if self.agq and gated and proj in config.options.agq_projections:
            return config.options.agq_weight
        return None

    @torch.no_grad()
    def __call__(self, ctx: LayerContext) -> None:
        layer, targets = ctx.layer, ctx.targets
        ctx.state["on_hessian"] = self.on_hessian
        # the named readers read the normed layer input, final from the start (readers found by
        # their shape alone might read another linear's output, quantized later: never replayed)
        readers = {id(m) for name, m in layer.attention.readers.items() if name in ATTENTION_READERS}
        for group in targets.attention():
            modules = {t.module: layer.module.get_submodule(t.module) for t in group}
            linear_stage(ctx, group, modules)
            for module in modules.values():
                if id(module) in readers:
                    ctx.settle(module)
        ctx.settle(layer.attention.module)
        if isinstance(layer.mlp, MoEBlock):
            self.moe_stages(ctx, layer.mlp)
        else:
            self.dense_stages(ctx, layer.mlp)

    def dense_stages(self, ctx: LayerContext, mlp: DenseMLP) -> None:
        for projections in (("gate", "up"), ("down",)):
            group = ctx.targets.dense(mlp, projections)
            linear_stage(ctx, group, {t.module: mlp.projection(p) for t, p in zip(group, projections)})

    def moe_stages(self, ctx: LayerContext, mlp: MoEBlock) -> None:
        routing = ctx.targets.routing()
        if routing:

            def accumulate(x: torch.Tensor, hessians: dict) -> None:
                if None not in hessians:
                    hessians[None] = self.stack(ctx, 1, x)
                hessians[None].add(0, x)

            solve_targets(ctx, routing, self.collect(ctx, mlp, accumulate)[None])
        self.expert_stage(ctx, mlp, ("gate", "up"))
        self.expert_stage(ctx, mlp, ("down",))
        del ctx.state["moe_inputs"], ctx.state["moe_routes"]

    def stack(self, ctx: LayerContext, members: int, x: torch.Tensor) -> HessianStack:
        return HessianStack(members, x.shape[-1], hessian_dtype(ctx.config), ctx.device)

    def collect(
        self,
        ctx: LayerContext,
        mlp: MoEBlock,
        accumulate: Callable[[torch.Tensor, dict], None],
    ) -> dict:
        """Accumulate Hessians from the MoE block's input tokens [T, H], micro-batch by micro-batch.

        The block input is final once attention is quantized, so it is captured in one pass
        and kept for the routing, gate/up and down stages instead of re-running attention.
        """
        if "moe_inputs" not in ctx.state:
            name = ctx.layer.mlp_name
            ctx.state["moe_inputs"] = [
                inputs[name].reshape(-1, inputs[name].shape[-1]) for inputs in ctx.each_batch({name: mlp.module})
            ]
        hessians: dict = {}
        for x in ctx.state["moe_inputs"]:
            accumulate(x, hessians)
        return hessians

    def expert_stage(self, ctx: LayerContext, mlp: MoEBlock, projections: tuple[str, ...]) -> None:
        bank = mlp.experts
        modes = {p: self.weighting(ctx.config, p, True) for p in projections}
        shared_modes = {p: self.weighting(ctx.config, p, mlp.shared_gate is not None) for p in projections}
        reads_x = projections != ("down",)

        routes = ctx.state.setdefault("moe_routes", {})

        def accumulate(x: torch.Tensor, hessians: dict) -> None:
            # The router is final before the expert stages, so gate/up and down see the same
            # routing of the same tokens: route and sort each micro-batch once for both.
            if id(x) not in routes:
                ids, coeffs = all_experts_routing(mlp, x) if ctx.config.options.all_experts else mlp.router.route(x)
                groups = MemberGroups.of(ids, bank.num_experts)
                routes[id(x)] = groups, coeffs[groups.token, groups.slot].float()
            groups, c = routes[id(x)]
            inputs = x
            if not reads_x:
                parts = x[groups.token].split(groups.sizes)
                inputs = torch.cat([bank.intermediate(expert, part) for expert, part in enumerate(parts)])
                check_finite_activations(inputs, ctx.where("experts.down"))
                groups = groups.laid_out()
            for mode in dict.fromkeys(modes.values()):
                key = ("experts", mode)
                if key not in hessians:
                    hessians[key] = self.stack(ctx, bank.num_experts, inputs)
                hessians[key].add_grouped(inputs, groups, _weights(c, mode), c)
            shared_c = mlp.shared_coefficient(x).reshape(-1).float()
            for index, shared in enumerate(mlp.shared_experts):
                inputs = x if reads_x else shared.act_fn(shared.gate(x)) * shared.up(x)
                for mode in dict.fromkeys(shared_modes.values()):
                    key = ("shared", 0 if reads_x else index, mode)
                    if key not in hessians:
                        hessians[key] = self.stack(ctx, 1, inputs)
                    if reads_x and index:
                        continue
                    hessians[key].add(0, inputs, _weights(shared_c, mode), shared_c)

        hessians = self.collect(ctx, mlp, accumulate)
        for mode in dict.fromkeys(modes.values()):
            group = [p for p in projections if modes[p] == mode]
            solve_targets(ctx, ctx.targets.experts(tuple(group)), hessians[("experts", mode)])
        for index, shared in enumerate(mlp.shared_experts):
            for mode in dict.fromkeys(shared_modes.values()):
                group = tuple(p for p in projections if shared_modes[p] == mode)
                key = ("shared", 0 if reads_x else index, mode)
                solve_targets(ctx, ctx.targets.dense(shared, group), hessians[key])


def all_experts_routing(mlp: MoEBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token to every expert ([T, E] ids and coefficients), for the Hessians only.

    A routed pair keeps the coefficient the model gives it; an unrouted pair gets the router's
    softmax probability for that expert, so AGQ weighs a token an expert never sees by how
    close the router came to choosing it (sigmoid-scored routers included: their raw scores
    are ranked the same way).
    """
    try:
        ids, coeffs, scores = mlp.router.route_with_scores(x)
    except NotImplementedError as err:
        raise UsageError(f"--all-experts needs the router's raw scores: {err}") from None
    dense = torch.softmax(scores.float(), dim=-1)
    dense.scatter_(1, ids.long(), coeffs.float())
    every = torch.arange(dense.shape[1], device=dense.device).expand_as(dense)
    return every, dense


def _weights(c: torch.Tensor, mode: Weighting) -> torch.Tensor | None:
    if mode is None:
        return None
    return c if mode == "c" else c * c


def _algorithm(agq: bool) -> Callable[..., QuantResult]:
    def quantize(
        model: torch.nn.Module,
        calib: torch.Tensor | None,
        config: QuantConfig[GPTQConfig],
        journal: LayerJournal | None = None,
        store: LayerStore | None = None,
    ) -> QuantResult:
        assert calib is not None
        return stream_quantize(model, calib, config, GPTQLayer(agq), journal, store)

    return quantize


ALGORITHMS = (
    Algorithm("gptq", GPTQConfig, _algorithm(False), needs_calibration=True, description="GPTQ (Frantar et al.)"),
    Algorithm(
        "agq", AGQConfig, _algorithm(True), needs_calibration=True, description="affinity-guided GPTQ (MoEQuant AGQ)"
    ),
)
