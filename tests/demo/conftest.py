"""Tiny demo builds shared by the demo tests: offline, a few steps, seconds each."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest

from moequant.demo import FAMILIES, build_demo

TINY_STEPS = 3


@pytest.fixture(scope="session")
def tiny_demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny build per family, seed 0."""
    root = tmp_path_factory.mktemp("demos")
    return {family: build_demo(root / family, family, steps=TINY_STEPS, seed=0, tiny=True) for family in FAMILIES}
