"""`moequant rotate`: fuse norms and Hadamard-rotate a MoE model into a new directory."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from moequant.errors import UsageError, require
from moequant.memory import say_peaks
from moequant.artifacts import atomic_dir
from moequant.loading import load_model, load_streaming, load_tokenizer
from moequant.quant.checkpoint import is_quantized_checkpoint
from moequant.rotation.artifact import StreamedRotation, save_rotated, source_hashes
from moequant.rotation.config import RotationConfig
from moequant.rotation.rotate import rotate_model
from moequant.runtime import DTYPES, resolve_device, resolve_dtype

NAME = "rotate"
HELP = "Fuse RMSNorm weights and apply a random Hadamard rotation to the residual stream (same function)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RotationConfig()
    parser.add_argument("--model", required=True, help="Hugging Face id or model directory")
    parser.add_argument("--out", required=True, help="output model directory (written atomically)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the random ±1 signs of Q")
    parser.add_argument(
        "--dtype", default="float32", choices=sorted(DTYPES), help="dtype the model is loaded and saved in"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--online-hadamard",
        action="store_true",
        help="also fold a Hadamard into every down projection; loaders must re-install its runtime half",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="models larger than host memory: rotate one decoder layer at a time from the shards, writing each "
        "layer's shard as it is done (converted tensors are staged in OUT.offload/)",
    )


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _source_tokenizer(spec: str, trust_remote_code: bool) -> object | None:
    """The source's own tokenizer; None when a local directory ships none (never invent one)."""
    root = Path(spec).expanduser()
    if root.is_dir() and not any((root / name).is_file() for name in _TOKENIZER_FILES):
        return None
    with contextlib.suppress(UsageError):
        return load_tokenizer(spec, trust_remote_code=trust_remote_code)
    return None


def run(args: argparse.Namespace) -> int:
    config = RotationConfig(seed=args.seed, online_hadamard=args.online_hadamard)
    require(
        not is_quantized_checkpoint(args.model),
        f"{args.model!r} is a quantized checkpoint; rotate the floating-point model",
    )
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype)
    started = time.perf_counter()
    tokenizer = _source_tokenizer(args.model, args.trust_remote_code)

    def metadata(report: dict[str, object]) -> dict[str, object]:
        return {
            **report,
            "source_model": args.model,
            "source_hashes": source_hashes(args.model),
            "dtype": args.dtype,
            "device": str(device),
            "seconds": round(time.perf_counter() - started, 3),
            "memory": say_peaks("rotate", device),
        }

    if args.stream:
        require(not config.online_hadamard, "--online-hadamard cannot be streamed yet; rotate without --stream")
        with load_streaming(args.model, Path(args.out), dtype, args.trust_remote_code, device) as (model, offloaded):
            with atomic_dir(args.out) as tmp:
                stream = StreamedRotation(model, offloaded, tmp, device)
                report = rotate_model(model, config, stream)
                written = metadata(report)
                stream.finish(written, tokenizer)
    else:
        model = load_model(args.model, dtype=dtype, device=device, trust_remote_code=args.trust_remote_code)
        report = rotate_model(model, config)
        written = metadata(report)
        save_rotated(model, args.out, written, tokenizer)
    online = " + online Hadamard before down projections" if config.online_hadamard else ""
    print(
        f"{args.out}: rotated {report['family']} hidden {report['hidden_size']} with {report['hadamard']} "
        f"(seed {config.seed}){online}, {report['norms_fused']} norms fused, {written['seconds']:.1f} s"
    )
    return 0
