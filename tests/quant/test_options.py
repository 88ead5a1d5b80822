"""Flags are built from option fields: one per field, a pair per switch, nothing filled in unless given."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from moequant.quant.options import add_flags, flag, given, option


@dataclass(frozen=True)
class Base:
    width: int = option(help="a required width")
    ratio: float | None = option(None, help="a ratio", shown_default="searched")


@dataclass(frozen=True)
class Toy(Base):
    mode: str = option("a", help="a mode", choices=("a", "b"))
    parts: tuple[str, ...] = option(("x", "y"), help="parts", choices=("x", "y", "z"))
    fast: bool = option(False, help="go fast")
    keep: bool = option(True, help="keep it", off="--drop", off_help="drop it")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_flags(parser, "base", Base)
    add_flags(parser, "toy", Toy)
    return parser


def test_only_given_flags_come_back_typed():
    args = _parser().parse_args(["--width", "3", "--ratio", "0.5", "--parts", "z,x", "--fast", "--drop"])
    assert given(args, (Toy,)) == {"width": 3, "ratio": 0.5, "parts": ("z", "x"), "fast": True, "keep": False}
    assert given(_parser().parse_args(["--width", "3"]), (Toy,)) == {"width": 3}


def test_switches_come_in_exclusive_pairs():
    args = _parser().parse_args(["--width", "1", "--no-fast", "--keep"])
    assert given(args, (Toy,)) == {"width": 1, "fast": False, "keep": True}
    with pytest.raises(argparse.ArgumentError, match="not allowed with argument --keep"):
        _parser().parse_args(["--width", "1", "--keep", "--drop"])


def test_a_field_without_default_is_required_and_choices_bind():
    with pytest.raises(SystemExit):
        _parser().parse_args([])
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'c'"):
        _parser().parse_args(["--width", "1", "--mode", "c"])


def test_help_shows_defaults_and_marks_the_default_switch():
    text = _parser().format_help()
    assert "a ratio (default: searched)" in text and "parts (default: x,y)" in text
    assert "keep it (default)" in text and "drop it" in text and "not --fast (default)" in text


def test_a_flag_is_the_field_name_with_dashes():
    assert flag("agq_projections") == "--agq-projections"
