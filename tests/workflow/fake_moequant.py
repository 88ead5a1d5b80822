"""A stand-in `moequant` for workflow tests: writes each verb's outputs in milliseconds.

The workflow's caching, rerun triggers and scheduling are what these tests check, not the
numbers, so every verb but `tables` (the real one) writes small deterministic files derived
from its arguments. `FAKE_MOEQUANT_FAIL=VERB` makes that verb leave a half-written output and exit 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

DOMAINS = ("prose", "code", "math", "mixed")


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _value(argv: list[str], scale: float, offset: float) -> float:
    digest = hashlib.sha256(" ".join(argv).encode()).digest()
    return offset + scale * int.from_bytes(digest[:4], "big") / 2**32


def _write_ppl(rest: list[str], out: str) -> None:
    names = [value.partition("=")[0] for flag, value in zip(rest, rest[1:]) if flag == "--dataset"]
    for name in names:
        path = Path(out.replace("{dataset}", name))
        path.parent.mkdir(parents=True, exist_ok=True)
        result = {"ppl": _value(rest + [name], 10.0, 10.0), "kld": _value(rest + [name], 0.05, 0.0), "top1_agree": 0.9}
        path.write_text(json.dumps(result))


def _write_tasks(rest: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tasks = (_flag(rest, "--tasks") or "").split(",")
    out.write_text(json.dumps({"results": {t: {"acc,none": _value(rest + [t], 1.0, 0.0)} for t in tasks if t}}))


def main(argv: list[str]) -> int:
    verb, rest = argv[0], argv[1:]
    if verb == "tables":
        from moequant.cli import main as real_main

        return real_main(argv)
    out = Path(_flag(rest, "--out") or _flag(rest, "--ppl-out") or "")
    if os.environ.get("FAKE_MOEQUANT_FAIL") == verb:
        out = Path(str(out).replace("{dataset}", "mixed"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("half-written\n")
        print(f"fake moequant: {verb} fails on purpose after writing {out}", file=sys.stderr)
        return 1
    if verb == "build-demo":
        for domain in DOMAINS:
            for split in ("train", "validation", "test"):
                path = out / "data" / domain / f"{split}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{domain} {split}\n")
        (out / "config.json").write_text(json.dumps({"args": rest}))
    elif verb == "calibrate":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"input_ids": [1, 2, 3], "text": "x"}) + "\n")
        usage = [[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]
        summary = {"sigma": _value(rest, 0.1, 0.0), "per_layer_usage": usage, "args": rest}
        out.with_name(out.name[: -len(".jsonl")] + ".summary.json").write_text(json.dumps(summary))
    elif verb in ("rotate", "quantize", "make-tasks"):
        out.mkdir(parents=True, exist_ok=True)
        (out / "made-by.json").write_text(json.dumps({"verb": verb, "args": rest}))
    elif verb == "validate":
        return 0 if (Path(rest[0]) / "made-by.json").is_file() else 2
    elif verb == "eval-ppl":
        _write_ppl(rest, str(out))
    elif verb == "eval-tasks":
        _write_tasks(rest, out)
    elif verb == "evaluate":
        _write_ppl(rest, _flag(rest, "--ppl-out") or "")
        _write_tasks(rest, Path(_flag(rest, "--tasks-out") or ""))
    else:
        print(f"fake moequant: unknown verb {verb!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
