"""Load what a user names as `--model`: a Hugging Face id, a model directory, a rotated model or a quantized checkpoint.

This sits above models/, quant/ and rotation/ because resolving a `--model` needs all three
(a checkpoint is read by quant/, a rotated directory's runtime transforms by rotation/);
the rooms themselves never import it, so no room reaches up.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from moequant.errors import UsageError
from moequant.models import adapt, check_model_type
from moequant.models.config import load_config
from moequant.models.files import INDEX_FILE, SINGLE_FILE, check_model_files, check_safetensors, read_weight_map
from moequant.models.streaming import (
    OffloadedLayers,
    detach_from_files,
    offload_device_map,
    offload_folder,
    offload_index_reader,
)
from moequant.models.shards import revert_names
from moequant.quant.checkpoint import is_quantized_checkpoint, load_quantized
from moequant.rotation.artifact import restore_online_hadamard


def _spill_folder() -> str:
    """Where a spread model puts the layers neither the GPUs nor host memory hold; removed at exit."""
    folder = tempfile.mkdtemp(prefix="moequant-offload-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def load_model(
    spec: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> nn.Module:
    """The model behind `spec`, in eval mode; quantized checkpoints come back dequantized.

    A rotated directory saved with online Hadamard transforms gets them re-installed, since
    its weights compute the original function only together with those runtime transforms.
    With a `device_map` (see `runtime.spread_map`) transformers places the model over the
    GPUs, offloading what does not fit; `device` is then only where inputs go.
    """
    placed = {"device_map": device_map, "offload_folder": _spill_folder()} if device_map else {}
    if is_quantized_checkpoint(spec):
        return load_quantized(spec, dtype=dtype, device=device, placed=placed)
    from transformers import AutoModelForCausalLM

    config = load_config(spec, trust_remote_code)
    check_model_type(config)
    source = str(Path(spec).expanduser()) if Path(spec).expanduser().is_dir() else spec
    if Path(source).is_dir():
        check_model_files(Path(source))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code, **placed)
    model = (model if placed else model.to(device)).eval()
    if Path(source).is_dir():
        restore_online_hadamard(model, source)
    return model


@contextmanager
def load_streaming(
    spec: str,
    out: Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[nn.Module, OffloadedLayers]]:
    """The model behind `spec` with every decoder layer on disk, and the handle that loads one at a time.

    What lies outside the decoder layers (embeddings, final norm, head) is placed on `device`.

    transformers' own loader does the offload (so each family's weight conversion applies);
    tensors it had to convert are staged beside the output `out` (`offload_folder`), which
    is removed when the block ends, however it ends; the rest are read from the source
    shards where they lie.
    """
    offload = offload_folder(out)
    try:
        yield _offloaded_model(spec, offload, dtype, trust_remote_code, device)
    finally:
        shutil.rmtree(offload, ignore_errors=True)


def _offloaded_model(
    spec: str, offload: Path, dtype: torch.dtype, trust_remote_code: bool, device: str | torch.device
) -> tuple[nn.Module, OffloadedLayers]:
    from transformers import AutoModelForCausalLM

    if is_quantized_checkpoint(spec):
        raise UsageError(f"{spec!r} is already a quantized checkpoint; streaming reads full-precision models")
    config = load_config(spec, trust_remote_code)
    source = _model_directory(spec)
    check_model_type(config)
    check_model_files(source)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    prefixes = adapt(skeleton).layer_prefixes()
    device_map = offload_device_map(skeleton, list(prefixes.values()), str(device))
    offload.mkdir(parents=True, exist_ok=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(source), dtype=dtype, trust_remote_code=trust_remote_code, device_map=device_map,
            offload_folder=str(offload),
        ).eval()
        names, read = offload_index_reader(model)
    except (ValueError, KeyError):
        _name_missing_tensor(skeleton, list(prefixes.values()), source)
        raise
    del skeleton
    detach_from_files(model)
    restore_online_hadamard(model, source)
    return model, OffloadedLayers(prefixes, names, read, str(source))


def _model_directory(spec: str) -> Path:
    """The directory whose shards hold `spec`'s weights: the directory itself, or a Hub id's cached snapshot."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, local_files_only=True, allow_patterns=["*.json", "*.safetensors", "*.py"]))
    except Exception as err:  # the hub client raises several unrelated types for "not cached"
        raise UsageError(f"streaming reads the shards of {spec!r}, which are not in the local Hugging Face cache ({type(err).__name__})") from None


def _name_missing_tensor(skeleton: nn.Module, layer_prefixes: list[str], source: Path) -> None:
    """When the offloading load fails, say which decoder-layer tensor the shards lack (if that is why).

    accelerate fails on such a tensor with a message that names neither tensor nor file.

    The names a layer's tensors have on disk are the model's own names with transformers'
    conversion reverted, which works on the meta skeleton without reading any weight.
    """
    state = {k: v for k, v in skeleton.state_dict().items() if any(k.startswith(f"{p}.") for p in layer_prefixes)}
    present = read_weight_map(source) if (source / INDEX_FILE).is_file() else check_safetensors(source / SINGLE_FILE)
    missing = sorted(set(revert_names(skeleton, state)) - set(present))
    if missing:
        raise UsageError(f"tensor {missing[0]!r} is missing from the weight files in {str(source)!r}")


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = Path(spec).expanduser()
    try:
        return AutoTokenizer.from_pretrained(str(path) if path.is_dir() else spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load the tokenizer of {spec!r}: {str(err).splitlines()[0]}") from None
