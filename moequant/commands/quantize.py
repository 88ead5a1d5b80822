"""`moequant quantize`: weight-only quantization of a MoE model into a checkpoint directory."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from moequant.artifacts import file_sha256
from moequant.errors import UsageError
from moequant.quant.config import QuantConfig
from moequant.quant.grid import SCALE_DTYPES

NAME = "quantize"
HELP = "quantize a MoE model's decoder weights (RTN, GPTQ, AGQ-GPTQ, ...) into a checkpoint directory"

SOURCE_METADATA = ("rotation.json",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from moequant.quant.options import add_flags
    from moequant.quant.registry import get, names, option_groups

    parser.add_argument("--model", required=True, help="Hugging Face id, model directory or quantized checkpoint")
    parser.add_argument("--algo", required=True, help=f"quantization algorithm: {', '.join(names())}")
    calibrated = ", ".join(name for name in names() if get(name).needs_calibration)
    parser.add_argument("--calib", help=f"calibration JSONL (moequant calibrate); required by {calibrated}")
    parser.add_argument("--nsamples", type=int, help="use only the first N calibration samples")
    parser.add_argument("--dtype", default="float32", help="dtype to load and quantize the model in")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="do not keep finished layers in OUT.journal/ for a rerun to continue from")
    parser.add_argument("--stream", action="store_true",
                        help="models larger than host memory: read one decoder layer at a time from the model "
                             "directory's shards and write its checkpoint shard as soon as it is quantized "
                             "(converted tensors are staged in OUT.offload/)")
    for title, cls in option_groups():
        add_flags(parser, title, cls)


def _source_metadata(model: str) -> dict[str, object]:
    root = Path(model).expanduser()
    found = {}
    for name in SOURCE_METADATA:
        path = root / name
        if path.is_file():
            found[name.removesuffix(".json")] = json.loads(path.read_text())
    return found


def _journal_fingerprint(args: argparse.Namespace, config: QuantConfig, calibration: dict | None, dtype: torch.dtype) -> str:
    """What a resumed run must share with the interrupted one: model files, calibration, configuration, code."""
    import hashlib

    import moequant
    from moequant.code_version import code_version

    root = Path(args.model).expanduser()
    files = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(root.glob("*.safetensors"))} if root.is_dir() else {}
    if (root / "config.json").is_file():
        files["config.json"] = [file_sha256(root / "config.json")]
    payload = {
        "model": args.model,
        "files": files,
        "config": config.to_dict(),
        "calibration": calibration,
        "dtype": str(dtype),
        "code": code_version(Path(moequant.__file__).resolve().parents[1], "quantize"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _refuse_unservable(config: QuantConfig, model: str) -> None:
    """What a pack-quantized checkpoint cannot represent is refused before any weight is read."""
    from moequant.rotation import read_metadata

    if not config.grid.sym:
        raise UsageError("--asym: stock transformers cannot load asymmetric pack-quantized checkpoints; drop --asym")
    rotation = read_metadata(model) if Path(model).expanduser().is_dir() else None
    if rotation and rotation.get("online_hadamard"):
        raise UsageError(
            f"{model!r} was rotated with --online-hadamard, which a plain checkpoint cannot serve; "
            "rotate without it"
        )


def scale_dtype(requested: str | None, dtype: torch.dtype) -> str:
    """--scale-dtype, or the model's dtype; a scale dtype the weights' dtype cannot hold is refused."""
    model_dtype = str(dtype).removeprefix("torch.")
    chosen = requested or (model_dtype if model_dtype in SCALE_DTYPES else "float32")
    if chosen != model_dtype and dtype != torch.float32:
        raise UsageError(
            f"--scale-dtype {chosen} with --dtype {model_dtype}: transformers loads scales in the model's dtype "
            f"and would round them; use --scale-dtype {model_dtype} or --dtype float32"
        )
    return chosen


def _skeleton_adapter(args: argparse.Namespace):
    """The model's structure on the meta device: checks and the memory plan before any weight is read."""
    from transformers import AutoModelForCausalLM

    from moequant.models import adapt
    from moequant.models.config import load_config

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(
            load_config(args.model, args.trust_remote_code), trust_remote_code=args.trust_remote_code
        )
    return adapt(skeleton)


def run(args: argparse.Namespace) -> int:
    from moequant.calib.records import read_calibration
    from moequant.artifacts import atomic_dir
    from moequant.loading import load_model, load_streaming, load_tokenizer
    from moequant.memory import say_peaks
    from moequant.quant.checkpoint import CheckpointWriter, StreamedLayers, save_quantized, servability
    from moequant.progress import say
    from moequant.quant.driver import check_groupsize, memory_plan
    from moequant.quant.journal import LayerJournal
    from moequant.quant.options import given
    from moequant.quant.registry import configure, get, option_groups
    from moequant.runtime import resolve_dtype

    dtype = resolve_dtype(args.dtype)
    values = given(args, (cls for _, cls in option_groups()))
    values["scale_dtype"] = scale_dtype(values.get("scale_dtype"), dtype)
    config = configure(args.algo, **values)
    _refuse_unservable(config, args.model)
    algorithm = get(config.algo)
    if algorithm.needs_calibration and not args.calib:
        raise UsageError(f"--algo {config.algo} needs calibration data: pass --calib FILE.jsonl")
    if args.nsamples is not None and args.nsamples < 1:
        raise UsageError(f"--nsamples must be at least 1, got {args.nsamples}")
    skeleton = _skeleton_adapter(args)
    check_groupsize(skeleton, config)
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    calib, calibration = None, None
    if args.calib:
        calib, summary = read_calibration(args.calib, tokenizer)
        calib = calib[: args.nsamples] if args.nsamples else calib
        calibration = {
            "path": str(args.calib),
            "sha256": file_sha256(args.calib),
            "nsamples": int(calib.shape[0]),
            "seqlen": int(calib.shape[1]),
            "source": summary.get("source"),
        }
    memory = memory_plan(skeleton, int(calib.numel()) if calib is not None else 0, dtype, config, args.stream)
    say("quantize", f"memory plan: {memory.describe()}")
    memory.check()
    journal = None
    if args.resume and algorithm.needs_calibration:
        journal = LayerJournal(Path(f"{args.out}.journal"), _journal_fingerprint(args, config, calibration, dtype))
    options = {"journal": journal} if journal is not None else {}

    def metadata(seconds: float) -> dict:
        payload = config.to_dict()
        return {
            "method": config.algo,
            "wbits": config.grid.wbits,
            "groupsize": config.grid.groupsize,
            "sym": config.grid.sym,
            "clip": config.grid.clip,
            "scale_dtype": config.grid.scale_dtype,
            "damp": payload.get("damp"),
            "config": payload,
            "calibration": calibration,
            "source_model": args.model,
            "source": _source_metadata(args.model),
            "trust_remote_code": args.trust_remote_code,
            "seconds": round(seconds, 3),
            "torch_version": torch.__version__,
            "memory": {**memory.report(), **say_peaks("quantize", memory.device)},
        }

    if args.stream:
        with load_streaming(args.model, Path(args.out), dtype, args.trust_remote_code) as (model, offloaded):
            started = time.time()
            with atomic_dir(args.out) as tmp:
                writer = CheckpointWriter(tmp, model)
                result = algorithm.quantize(model, calib, config, store=StreamedLayers(offloaded, writer), **options)
                writer.finish(result, metadata(time.time() - started), tokenizer)
    else:
        model = load_model(args.model, dtype=dtype, trust_remote_code=args.trust_remote_code)
        started = time.time()
        result = algorithm.quantize(model, calib, config, **options)
        save_quantized(args.out, model, result, metadata(time.time() - started), tokenizer)
    if journal is not None:
        journal.remove()
    summary = result.summary()
    print(f"quantized {summary['weights']} weights with {config.algo} w{config.grid.wbits} → {args.out} "
          f"(fallbacks: {summary['fallbacks'] or 'none'})")
    servable = servability(config.grid.wbits)
    if not servable["vllm"]:
        print(f"note: {servable['note']}")
    return 0
