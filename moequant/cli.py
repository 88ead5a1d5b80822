"""`moequant <verb>`: the entry point that workflow rules and users call."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from moequant import __version__, commands
from moequant.errors import UsageError


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we keep it to one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"moequant {self.prog.split()[-1]}: error: {message}\n")
        raise SystemExit(2)


def _verb_modules() -> list[ModuleType]:
    found = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME"):
            found.append(module)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="moequant", description="Post-training quantization for MoE LLMs.")
    parser.add_argument("--version", action="version", version=f"moequant {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_OneLineParser)
    for module in _verb_modules():
        verb = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(verb)
        verb.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        sys.stderr.write(f"moequant {args.verb}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"moequant {args.verb}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
