"""An option of a quantization run is declared once, as a dataclass field, and read from there.

The field's metadata carries its help text, its allowed values and, for a switch, the
spelling of the flag that turns it off. `moequant quantize` builds its flags from these
fields, a checkpoint's `quantization.json` records them by field name, and a workflow
method's `options` keys are the flag names; a second list of option names anywhere else
would drift from the dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from moequant.errors import require


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: tuple[Any, ...] = (),
    off: str = "",
    off_help: str = "",
    shown_default: str = "",
) -> Any:
    """A dataclass field declared as an option.

    `choices` bound the value (each element of a tuple) and become the flag's choices; a
    switch (a bool field) is turned off by `off` (default `--no-NAME`), described by
    `off_help`; `shown_default` replaces the default in the help where the command line
    fills it in differently (or where None means something).
    """
    metadata = {"help": help, "choices": choices, "off": off, "off_help": off_help, "shown_default": shown_default}
    return dataclasses.field(default=default, metadata=metadata)


def check_choices(settings: Any) -> None:
    """Every field of `settings` declared with `choices` holds one of them."""
    for f in dataclasses.fields(settings):
        allowed = f.metadata.get("choices")
        if not allowed:
            continue
        value = getattr(settings, f.name)
        if isinstance(value, tuple):
            unknown = [v for v in value if v not in allowed]
            require(not unknown, f"{f.name} {unknown} not allowed; choose from {allowed}")
        else:
            require(value in allowed, f"{f.name} must be one of {allowed}, got {value!r}")


def flag(name: str) -> str:
    """The flag of option `name`; a workflow `options` key is the flag without its dashes."""
    return "--" + name.replace("_", "-")


def own_fields(cls: type) -> list[dataclasses.Field]:
    """The fields `cls` declares itself: an inherited option is listed under the class that declares it."""
    inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    return [f for f in dataclasses.fields(cls) if f.name not in inherited]


def flags_of(cls: type, f: dataclasses.Field) -> tuple[str, ...]:
    """The flags that set field `f` of `cls`: one, or a switch's on and off spellings."""
    if typing.get_type_hints(cls)[f.name] is bool:
        return flag(f.name), f.metadata.get("off") or flag(f"no_{f.name}")
    return (flag(f.name),)


def _parse(hint: Any) -> Callable[[str], Any]:
    """How a flag's text becomes the field's value: `X | None` as X, a tuple as a comma list."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is tuple:
        return lambda text: tuple(part for part in text.split(",") if part)
    return hint


def _shown(f: dataclasses.Field) -> str:
    if f.metadata.get("shown_default"):
        return f.metadata["shown_default"]
    if f.default is None or f.default is dataclasses.MISSING:
        return ""
    return ",".join(f.default) if isinstance(f.default, tuple) else str(f.default)


def add_flags(parser: argparse.ArgumentParser, title: str, cls: type) -> None:
    """One flag per field `cls` declares (two for a switch), under `title` in the help.

    Nothing is filled in for a flag not given, so `given` can tell the options a command
    line set from the defaults; a field without a default is a required flag.
    """
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in own_fields(cls):
        text, hint = f.metadata["help"], hints[f.name]
        if hint is bool:
            on, off = flags_of(cls, f)
            pair = group.add_mutually_exclusive_group()
            pair.add_argument(on, dest=f.name, action="store_true", default=argparse.SUPPRESS,
                              help=text + (" (default)" if f.default is True else ""))
            pair.add_argument(off, dest=f.name, action="store_false", default=argparse.SUPPRESS,
                              help=(f.metadata["off_help"] or f"not {on}") + (" (default)" if f.default is False else ""))
            continue
        shown = _shown(f)
        listed = typing.get_origin(hint) is tuple
        group.add_argument(
            flag(f.name),
            dest=f.name,
            type=_parse(hint),
            choices=None if listed else f.metadata["choices"] or None,
            required=f.default is dataclasses.MISSING,
            default=argparse.SUPPRESS,
            help=text + (f" (default: {shown})" if shown else ""),
        )


def given(args: argparse.Namespace, classes: typing.Iterable[type]) -> dict[str, Any]:
    """The options of `classes` that the command line set, by field name."""
    names = {f.name for cls in classes for f in dataclasses.fields(cls)}
    return {name: value for name, value in vars(args).items() if name in names}
