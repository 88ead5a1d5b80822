"""Export/load check on the default run: in-memory quantized model vs stock transformers loading.

For each method (default algorithm options), the default run's demo model is quantized in memory with the run's own
calibration set, written as a compressed-tensors checkpoint, and loaded back with stock
`AutoModelForCausalLM.from_pretrained`; the table gives max |Δlogit| between the two on
held-out windows (0 means the served model is the evaluated one) and the checkpoint's size
against the same model stored in fp16. Sizes of the run's own checkpoints are listed too.

    .venv/bin/python bench/checkpoint_export.py --results results
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from moequant.calib.records import read_calibration
from moequant.loading import load_model, load_tokenizer
from moequant.quant.checkpoint import save_quantized
from moequant.quant.registry import configure, get

METHODS = {  # name → (algorithm, calibration set, rotated source)
    "rtn-w4": ("rtn", None, False),
    "gptq-w4": ("gptq", "mixed", False),
    "moequant++-w4": ("agq", "ebss", True),
    "moequant++-w3": ("agq", "ebss", True),
}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", default="results")
    parser.add_argument("--model", default="demo")
    args = parser.parse_args()
    root = Path(args.results) / args.model
    fp_dir = root / "model"
    tokenizer = load_tokenizer(str(fp_dir))
    text = (fp_dir / "data" / "mixed" / "test.txt").read_text()
    held_out = torch.tensor(tokenizer(text)["input_ids"][: 8 * 128]).reshape(8, 128)
    fp_params = sum(t.numel() for t in load_model(str(fp_dir)).state_dict().values())
    fp16_bytes = 2 * fp_params
    print(f"fp model: {fp_params} parameters, {fp16_bytes / 1e6:.2f} MB in fp16\n")
    print("| method | max abs Δlogit, stock load vs in memory | checkpoint MB | × fp16 |")
    print("|---|---|---|---|")
    for name, (algo, calib_name, rotated) in METHODS.items():
        source = root / "rotated" if rotated else fp_dir
        model = load_model(str(source))
        calib = None
        if calib_name is not None:
            calib, _ = read_calibration(str(root / "calib" / f"{calib_name}.jsonl"), tokenizer)
        bits = int(name.rsplit("w", 1)[1])
        result = get(algo).quantize(model, calib, configure(algo, wbits=bits, device="cpu"))
        with torch.no_grad():
            in_memory = model(held_out).logits
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / name
            save_quantized(out, model, result, {"method": algo, "wbits": bits}, tokenizer)
            from transformers import AutoModelForCausalLM

            stock = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
            with torch.no_grad():
                loaded = stock(held_out).logits
            size = _size(out)
        delta = (loaded - in_memory).abs().max().item()
        print(f"| {name} | {delta:.3g} | {size / 1e6:.2f} | {size / fp16_bytes:.3f} |")
    print("\nThe run's own checkpoints:\n")
    print("| checkpoint | MB | × fp16 |")
    print("|---|---|---|")
    for ckpt in sorted((root / "quant").iterdir()):
        print(f"| {ckpt.name} | {_size(ckpt) / 1e6:.2f} | {_size(ckpt) / fp16_bytes:.3f} |")


if __name__ == "__main__":
    main()
