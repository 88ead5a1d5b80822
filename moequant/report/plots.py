"""Figures: perplexity against bit width per method, expert usage per calibration set.

matplotlib runs on the Agg backend: plots are written on headless cluster nodes.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from moequant.plan.layout import FP_BITS  # noqa: E402
from moequant.report.layout import ResultsLayout  # noqa: E402
from moequant.report.spec import ReportSpec  # noqa: E402


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _no_data(axes: Any, message: str) -> None:
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes)


def ppl_vs_bits(spec: ReportSpec, layout: ResultsLayout, model: str, dataset: str | None) -> bytes:
    figure, axes = plt.subplots(figsize=(6, 4))
    plotted = False
    if dataset is not None:
        for name, method in spec.methods.items():
            if method.is_fp:
                fp = layout.ppl(model, name, FP_BITS, dataset).get("ppl")
                if fp is not None:
                    axes.axhline(fp, color="black", linestyle="--", linewidth=1, label=method.label)
                    plotted = True
                continue
            points = [(b, layout.ppl(model, name, b, dataset).get("ppl")) for b in sorted(method.bits)]
            points = [(b, v) for b, v in points if v is not None]
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, marker="o", label=method.label)
                plotted = True
    if not plotted:
        _no_data(axes, f"no perplexity results for {spec.models.get(model, model)}")
        return _png(figure)
    bits = sorted({b for m in spec.methods.values() for b in m.bits if b != FP_BITS})
    axes.set_xticks(bits)
    axes.set_xlabel("weight bits")
    axes.set_ylabel(f"perplexity ({dataset})")
    axes.set_title(f"{spec.models.get(model, model)}: perplexity vs bits")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return _png(figure)


def expert_usage(spec: ReportSpec, layout: ResultsLayout, model: str) -> bytes:
    summaries = []
    for name, label in spec.calibration.items():
        summary = layout.calibration(model, name)
        usage = summary.get("per_layer_usage")
        if usage:
            summaries.append((label, np.asarray(usage, dtype=float), summary.get("sigma")))
    if not summaries:
        figure, axes = plt.subplots(figsize=(4, 2))
        _no_data(axes, f"no calibration summaries for {spec.models.get(model, model)}")
        return _png(figure)
    vmax = max(float(usage.max()) for _, usage, _ in summaries)
    figure, grid = plt.subplots(1, len(summaries), figsize=(3.2 * len(summaries), 3), squeeze=False)
    for axes, (label, usage, sigma) in zip(grid[0], summaries):
        image = axes.imshow(usage, aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax)
        sigma_text = f"σ={sigma:.4f}" if isinstance(sigma, (int, float)) else "σ unknown"
        axes.set_title(f"{label}\n{sigma_text}", fontsize=9)
        axes.set_xlabel("expert")
        axes.set_ylabel("MoE layer")
    figure.colorbar(image, ax=grid[0].tolist(), label="share of selections")
    figure.suptitle(f"{spec.models.get(model, model)}: expert usage per calibration set", fontsize=10)
    return _png(figure)
