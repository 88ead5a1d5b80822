"""`moequant <verb>`: the entry point that workflow rules and users call."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
from types import ModuleType

from moequant import __version__, commands
from moequant.errors import UsageError


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we keep it to one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _module_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


def _verb_modules(requested: str | None) -> list[ModuleType]:
    """Import only the requested verb's module when it is known.

    Workflow jobs each start a fresh process; importing every verb (and with them torch,
    transformers, lm-eval) would add seconds to every job for nothing.
    """
    names = _module_names()
    wanted = requested.replace("-", "_") if requested else None
    if wanted in names:
        names = [wanted]
    found = []
    for name in names:
        module = importlib.import_module(f"{commands.__name__}.{name}")
        if hasattr(module, "NAME"):
            found.append(module)
    return found


def build_parser(requested: str | None = None) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="moequant", description="Post-training quantization for MoE LLMs.")
    parser.add_argument("--version", action="version", version=f"moequant {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_OneLineParser)
    for module in _verb_modules(requested):
        verb = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(verb)
        verb.set_defaults(_run=module.run)
    return parser


def _terminate(signum: int, _frame: object) -> None:
    """Turn SIGTERM (a cancelled cluster job, Snakemake stopping) into an exception so
    half-written artifacts are removed by their atomic writers on the way out."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    requested = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(requested).parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        sys.stderr.write(f"moequant {args.verb}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"moequant {args.verb}: interrupted\n")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
