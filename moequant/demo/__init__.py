"""The demo MoE: a small model trained on CPU in minutes that quantization visibly hurts.

It stands in for Mixtral / Qwen-MoE / DeepSeek checkpoints wherever downloads are not
possible: the workflow's default run, examples and end-to-end tests.
"""

from moequant.demo.build import SUMMARY, build_demo
from moequant.demo.corpus import (
    DOMAINS,
    FULL_BUDGET,
    MIXED,
    SPLITS,
    TINY_BUDGET,
    Corpus,
    CorpusBudget,
    arithmetic_problem,
    build_corpus,
)
from moequant.demo.evaluate import HeldoutResult, evaluate, evaluate_texts, heldout_windows
from moequant.demo.train import DEFAULT_SHAPE, DEFAULT_STEPS, FAMILIES, TINY_SHAPE, DemoShape, TrainSettings

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_STEPS",
    "DOMAINS",
    "FAMILIES",
    "FULL_BUDGET",
    "MIXED",
    "SPLITS",
    "SUMMARY",
    "TINY_BUDGET",
    "TINY_SHAPE",
    "Corpus",
    "CorpusBudget",
    "DemoShape",
    "HeldoutResult",
    "TrainSettings",
    "arithmetic_problem",
    "build_corpus",
    "build_demo",
    "evaluate",
    "evaluate_texts",
    "heldout_windows",
]
