"""Load what a user names as `--model`: a Hugging Face id, a model directory, a rotated model or a quantized checkpoint.

This sits above models/, quant/ and rotation/ because resolving a `--model` needs all three
(a checkpoint is read by quant/, a rotated directory's runtime transforms by rotation/);
the rooms themselves never import it, so no room reaches up.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from moequant.errors import UsageError
from moequant.models import check_model_type
from moequant.models.config import load_config
from moequant.models.files import check_model_files
from moequant.quant.checkpoint import is_quantized_checkpoint, load_quantized
from moequant.rotation.artifact import restore_online_hadamard


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
        restore_online_hadamard(model, source)
    return model


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    try:
        return AutoTokenizer.from_pretrained(str(path) if path.is_dir() else spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load the tokenizer of {spec!r}: {str(err).splitlines()[0]}") from None
