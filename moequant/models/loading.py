"""Load what a user names as `--model`: a Hugging Face id, a model directory, or a checkpoint.

Everything that can go wrong before weights are read (missing path, unknown family, model
not in the offline cache) becomes one `UsageError` line.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from moequant.errors import UsageError
from moequant.models import check_model_type
from moequant.models.files import check_model_files

QUANTIZED_MARKER = "quantization.json"


def _looks_like_path(spec: str) -> bool:
    """Hugging Face ids are `name` or `org/name`; anything else is meant as a local path."""
    return Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1


def load_config(spec: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    path = Path(spec).expanduser()
    if _looks_like_path(spec) and not path.is_dir():
        raise UsageError(f"model directory {spec!r} does not exist")
    try:
        return AutoConfig.from_pretrained(str(path) if path.is_dir() else spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"cannot load model {spec!r}: not a model directory and not in the local Hugging Face cache ({first})"
        ) from None


def is_quantized_checkpoint(spec: str) -> bool:
    return (Path(spec).expanduser() / QUANTIZED_MARKER).is_file()


def load_model(
    spec: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> nn.Module:
    """The model behind `spec`, in eval mode; quantized checkpoints come back dequantized.

    A rotated directory saved with online Hadamard transforms gets them re-installed, since
    its weights compute the original function only together with those runtime transforms.
    """
    if is_quantized_checkpoint(spec):
        from moequant.quant.checkpoint import load_quantized

        return load_quantized(spec, dtype=dtype, device=device)
    from transformers import AutoModelForCausalLM

    config = load_config(spec, trust_remote_code)
    check_model_type(config)
    source = str(Path(spec).expanduser()) if Path(spec).expanduser().is_dir() else spec
    if Path(source).is_dir():
        check_model_files(Path(source))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    model = model.to(device).eval()
    if Path(source).is_dir():
        from moequant.rotation.artifact import restore_online_hadamard

        restore_online_hadamard(model, source)
    return model


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    try:
        return AutoTokenizer.from_pretrained(str(path) if path.is_dir() else spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load the tokenizer of {spec!r}: {str(err).splitlines()[0]}") from None
