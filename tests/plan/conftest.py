"""The shipped configs as the workflow sees them: schema-validated, defaults filled in."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=None)
def _validated(name: str) -> dict[str, Any]:
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    validate(config, str(SCHEMA))
    return config


@pytest.fixture
def load_config() -> Callable[[str], dict[str, Any]]:
    """A fresh copy of config/<name>.yaml, validated the way the Snakefile does it."""
    return lambda name: copy.deepcopy(_validated(name))
