"""`moequant eval-ppl`: perplexity (and KL to a reference) of a model, checkpoint or Hub id."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from moequant.artifacts import write_json
from moequant.errors import UsageError

NAME = "eval-ppl"
HELP = "Perplexity on wikitext2, c4 or text:PATH; with --reference also KL divergence and top-1 agreement."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF id, model directory or quantized checkpoint directory")
    parser.add_argument("--dataset", required=True, help="wikitext2, c4 or text:PATH (.txt or .jsonl with 'text')")
    parser.add_argument("--seqlen", type=int, default=2048, help="window length in tokens (default 2048)")
    parser.add_argument("--reference", help="full-precision model for KL(reference‖model) and top-1 agreement")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    parser.add_argument("--max-windows", type=int, help="evaluate only the first N windows")
    parser.add_argument("--random-windows", type=int, default=256, help="windows drawn from c4 (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the c4 window draw (default 0)")
    parser.add_argument("--data-path", help="local copy of the Hub dataset (save_to_disk dir, repo clone or file)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--reference-device", help="device of the reference model (default: --device)")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, float32 on CPU) or a torch dtype name")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--out", required=True, help="output JSON file")


def run(args: argparse.Namespace) -> int:
    from moequant.eval.config import PerplexityConfig, eval_dtype
    from moequant.eval.datasets import load_eval_text
    from moequant.eval.perplexity import measure_perplexity, precheck_seqlen
    from moequant.eval.provenance import model_provenance, run_metadata
    from moequant.models.loading import load_model, load_tokenizer
    from moequant.runtime import resolve_device

    config = PerplexityConfig(
        dataset=args.dataset,
        seqlen=args.seqlen,
        batch_size=args.batch_size,
        max_windows=args.max_windows,
        random_windows=args.random_windows,
        seed=args.seed,
        data_path=args.data_path,
    )
    device = resolve_device(args.device)
    reference_device = resolve_device(args.reference_device) if args.reference_device else device
    dtype = eval_dtype(args.dtype, device)
    started = time.perf_counter()
    for spec in filter(None, (args.model, args.reference)):
        precheck_seqlen(spec, config.seqlen, args.trust_remote_code)
    text = load_eval_text(config.dataset, config.data_path)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, dtype=dtype, device=device, trust_remote_code=args.trust_remote_code)
    reference = None
    if args.reference:
        reference = load_model(args.reference, dtype=dtype, device=reference_device, trust_remote_code=args.trust_remote_code)
        if reference.config.vocab_size != model.config.vocab_size:
            raise UsageError(
                f"reference {args.reference!r} has vocabulary size {reference.config.vocab_size}, "
                f"the model {model.config.vocab_size}: KL needs the same vocabulary"
            )
    measured = measure_perplexity(
        model, tokenizer, config, reference=reference, progress=not args.no_progress, text=text
    )
    write_json(
        args.out,
        {
            **measured,
            "model": model_provenance(args.model),
            "reference": model_provenance(args.reference) if args.reference else None,
            "config": asdict(config),
            **run_metadata(device, dtype, time.perf_counter() - started),
        },
    )
    summary = f"ppl {measured['ppl']:.4f} over {measured['tokens']} tokens"
    if reference is not None:
        summary += f", kld {measured['kld']:.6f}, top1_agree {measured['top1_agree']:.4f}"
    print(f"{args.dataset}: {summary} -> {args.out}")
    return 0
