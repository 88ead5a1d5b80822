"""Peak host memory of `moequant quantize` and `rotate`, in memory and streamed from disk, against model depth.

Synthetic Mixtral-class models of one width with 4, 8, 16 and 32 decoder layers are saved
to disk; each run is a fresh `moequant quantize` process, so imports, loading and
checkpoint writing all count. Both modes run in
the same invocation, side by side, and the streamed checkpoint's shards are compared byte
for byte with the in-memory one. `moequant rotate` is measured the same two ways.

Two peaks per run: anonymous memory (what must fit; sampled) and resident memory (the
kernel's high-water mark, which also counts clean pages of memory-mapped shards that the
kernel drops before it runs out of memory). The bound the streamed anonymous peak is held
to is the issue's: a process that has imported what `moequant quantize` imports (torch,
transformers, accelerate, compressed-tensors, the algorithms), plus what lies outside the decoder layers, three decoder layers and the
calibration activations.

The second table projects host, device and disk needs of the real models from their meta
skeletons with the same memory plan `moequant quantize` prints before it starts.

    PYTHONPATH=. python bench/streaming_memory.py [--depths 4,8,16,32] [--hidden 256] [--skip-rotate] [--projection-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from moequant.memory import module_bytes
from moequant.models import adapt
from moequant.models.synthetic import PAPER_SHAPES, tiny_model
from moequant.quant.driver import memory_plan
from moequant.quant.registry import configure
from tests.quant.helpers import VOCAB, word_tokenizer, write_calib

MIB = 2**20
GIB = 2**30
BASELINE = "import torch, transformers, accelerate, compressed_tensors, safetensors.torch, moequant.loading, moequant.quant.registry as r; r.names()"


def _anon_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_memory(argv: list[str]) -> tuple[int, int]:
    """(peak anonymous bytes, peak resident bytes) of one child process.

    Resident memory (the kernel's high-water mark, `wait4`) also counts the clean pages of
    memory-mapped shards that were read, which the kernel reclaims before it runs out of
    memory; anonymous memory (sampled every 10 ms) is what has to fit.
    """
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, _anon_bytes(process.pid))
        time.sleep(0.01)
    stderr = process.stderr.read() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{stderr[-2000:]}")
    return peak_anon, usage.ru_maxrss * 1024


def quantize(source: Path, out: Path, algo: str, calib: Path, stream: bool) -> list[str]:
    argv = [sys.executable, "-m", "moequant", "quantize", "--model", str(source), "--algo", algo, "--wbits", "4",
            "--calib", str(calib), "--out", str(out), "--device", "cpu", "--no-resume"]
    return argv + (["--stream"] if stream else [])


def shards(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.safetensors"))}


def depth_rows(depths: list[int], hidden: int, nsamples: int, seqlen: int, rotate: bool, work: Path) -> list[list[str]]:
    tokenizer = word_tokenizer()
    calib = write_calib(work / "calib.jsonl", tokenizer, nsamples=nsamples, seqlen=seqlen)
    baseline, _ = peak_memory([sys.executable, "-c", BASELINE])
    rows = []
    for depth in depths:
        model = tiny_model("mixtral", hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=depth,
                           num_local_experts=8, num_attention_heads=8, num_key_value_heads=4, vocab_size=VOCAB,
                           max_position_embeddings=max(seqlen, 64))
        source = work / f"mixtral-{depth}"
        model.save_pretrained(source)
        tokenizer.save_pretrained(source)
        adapter = adapt(model)
        layer = max(module_bytes(layer.module) for layer in adapter.layers)
        outside = module_bytes(model) - sum(module_bytes(layer.module) for layer in adapter.layers)
        activations = 3 * nsamples * seqlen * hidden * 4
        bound = baseline + outside + 3 * layer + activations
        cells = [str(depth), f"{module_bytes(model) / MIB:.0f}"]
        identical = []
        for algo in ("gptq", "agq"):
            memory = peak_memory(quantize(source, work / f"{algo}-{depth}-memory", algo, calib, False))
            streamed = peak_memory(quantize(source, work / f"{algo}-{depth}-stream", algo, calib, True))
            identical.append(shards(work / f"{algo}-{depth}-memory") == shards(work / f"{algo}-{depth}-stream"))
            cells += [f"{memory[0] / MIB:.0f} / {memory[1] / MIB:.0f}", f"{streamed[0] / MIB:.0f} / {streamed[1] / MIB:.0f}",
                      f"{streamed[0] / bound:.2f}"]
            for mode in ("memory", "stream"):
                shutil.rmtree(work / f"{algo}-{depth}-{mode}")
        if rotate:
            for extra in ([], ["--stream"]):
                out = work / f"rot-{depth}"
                argv = [sys.executable, "-m", "moequant", "rotate", "--model", str(source), "--out", str(out),
                        "--device", "cpu", *extra]
                anon, resident = peak_memory(argv)
                cells.append(f"{anon / MIB:.0f} / {resident / MIB:.0f}")
                shutil.rmtree(out)
        cells += [f"{bound / MIB:.0f}", "yes" if all(identical) else "NO"]
        rows.append(cells)
        print(" | ".join(cells), flush=True)
    return rows


def skeleton(name: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    if name == "deepseek-v3":
        config = AutoConfig.for_model("deepseek_v3")  # the config class's defaults are DeepSeek-V3's published shape
    else:
        family, values = PAPER_SHAPES[name]
        config = AutoConfig.for_model(family, **values)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def projection_rows(tokens: int) -> list[list[str]]:
    """Host, device and disk of a bf16 AGQ-GPTQ W4 run, in memory and streamed."""
    dtype = torch.bfloat16
    rows = []
    for name in [*PAPER_SHAPES, "deepseek-v3"]:
        adapter = adapt(skeleton(name))
        config = configure("agq", wbits=4, device="cpu")
        in_memory = memory_plan(adapter, tokens, dtype, config)
        streamed = memory_plan(adapter, tokens, dtype, config, streaming=True)
        layer = max(module_bytes(layer.module, dtype) for layer in adapter.layers)
        device = layer + sum(streamed.on_device.values())
        model = module_bytes(adapter.model, dtype)
        host_memory, host_stream = sum(in_memory.host.values()), sum(streamed.host.values())
        checkpoint = model * 4 // 16 + model // 64  # W4 codes plus one 16-bit scale per 128 weights (groupsize 128)
        rows.append([
            name, f"{model / GIB:.1f}", f"{host_memory / GIB:.1f}", f"{host_stream / GIB:.2f}", f"{device / GIB:.2f}",
            f"≤ {model / GIB:.0f}", f"{checkpoint / GIB:.0f}",
        ])
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="4,8,16,32")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=64)
    parser.add_argument("--skip-rotate", action="store_true")
    parser.add_argument("--projection-tokens", type=int, default=128 * 512)
    parser.add_argument("--projection-only", action="store_true", help="only the real models' projected needs")
    args = parser.parse_args()
    depths = [] if args.projection_only else [int(d) for d in args.depths.split(",")]
    with tempfile.TemporaryDirectory() as work:
        rows = depth_rows(depths, args.hidden, args.nsamples, args.seqlen, not args.skip_rotate, Path(work))
    header = ["layers", "model MiB (fp32)", "GPTQ in memory", "GPTQ streamed", "streamed anon/bound",
              "AGQ in memory", "AGQ streamed", "streamed anon/bound"]
    header += [] if args.skip_rotate else ["rotate in memory", "rotate streamed"]
    header += ["bound MiB", "identical shards"]
    if rows:
        print("\nPeak host memory of one `moequant quantize` process, MiB: anonymous / resident (incl. mapped shard pages)\n")
        print(table(header, rows))
    print(f"\nProjected needs of AGQ-GPTQ W4 in bf16 ({args.projection_tokens} calibration tokens), GiB\n")
    print(table(["model", "bf16 weights", "host in memory", "host streamed", "device (one layer + activations + "
                 "Hessians)", "staging disk (converted tensors)", "checkpoint disk"], projection_rows(args.projection_tokens)))


if __name__ == "__main__":
    main()
