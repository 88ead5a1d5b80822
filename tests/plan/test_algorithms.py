"""The plan's torch-free table of algorithms says what the registry and the schema say."""

from __future__ import annotations

import argparse
import dataclasses

import yaml

from moequant.commands import quantize
from moequant.plan.algorithms import ALGORITHMS, COMMAND_OPTIONS, SETTINGS, AlgorithmFacts, method_options
from moequant.quant import registry
from moequant.quant.config import SHARED
from moequant.quant.options import flags_of
from tests.plan.conftest import SCHEMA

SET_BY_THE_PLAN = {"wbits"}
"""Flags the plan spells itself from the method entry (`bits`), never from its options."""


def _keys(cls: type) -> tuple[str, ...]:
    flags = (spelled for f in dataclasses.fields(cls) for spelled in flags_of(cls, f))
    return tuple(sorted(flag.removeprefix("--").replace("-", "_") for flag in flags))


def test_the_table_is_the_registry() -> None:
    expected = {
        name: AlgorithmFacts(registry.get(name).needs_calibration, _keys(registry.get(name).options))
        for name in registry.names()
    }
    assert ALGORITHMS == expected


def test_settings_are_the_shared_dataclasses_flags() -> None:
    assert set(SETTINGS) == {key for cls in SHARED for key in _keys(cls)} - SET_BY_THE_PLAN


def test_command_options_are_flags_of_quantize() -> None:
    parser = argparse.ArgumentParser()
    quantize.add_arguments(parser)
    argv = ["--model", "m", "--algo", "rtn", "--wbits", "4", "--out", "o"]
    for key in COMMAND_OPTIONS:
        argv += [f"--{key.replace('_', '-')}", "1"]
    args = parser.parse_args(argv)
    assert all(getattr(args, key) is not None for key in COMMAND_OPTIONS)


def test_the_schema_lists_the_registry_and_none() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    enum = schema["properties"]["methods"]["additionalProperties"]["properties"]["algorithm"]["enum"]
    assert sorted(enum) == sorted(["none", *registry.names()])


def test_every_shipped_method_option_is_a_flag_of_its_algorithm(load_config) -> None:
    for name in ("test", "config", "paper"):
        for method in load_config(name)["methods"].values():
            if method["algorithm"] != "none":
                assert set(method["options"]) <= set(method_options(method["algorithm"])), (name, method)
