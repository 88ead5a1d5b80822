"""Resume an interrupted quantization at the next layer: every finished layer is a checked file.

After layer k is quantized the driver writes that layer's weights, its codes and report rows,
and the activations layer k+1 starts from, each to a temporary name renamed into place, and
only then records the files' SHA-256 in `journal.json` (itself written atomically). A rerun
with the same fingerprint (model, calibration, configuration) restores the recorded layers
and continues; a file whose hash does not match, and every layer after it, is quantized
again, so a half-written file is never trusted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from moequant.artifacts import file_sha256, write_json
from moequant.models import DecoderLayer, ModelAdapter
from moequant.progress import say
from moequant.quant.layer_store import LayerStore
from moequant.quant.report import PackedWeight, QuantResult, ReportRow

JOURNAL = "journal.json"


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> str:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_sha256(path)


class LayerJournal:
    """The finished layers of one quantize run, kept in `directory` until its checkpoint is written."""

    def __init__(self, directory: str | os.PathLike[str], fingerprint: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.entries: list[dict[str, str]] = []

    def _read(self) -> list[dict[str, str]]:
        path = self.directory / JOURNAL
        try:
            journal = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        if journal.get("fingerprint") != self.fingerprint:
            say("quantize", f"journal {str(self.directory)!r} belongs to another run; starting from layer 1")
            return []
        good = []
        for entry in journal.get("layers", []):
            if not self._intact(entry["layer_file"], entry["layer_sha256"]):
                say("quantize", f"journal file of layer {int(entry['index']) + 1} does not match its hash; redoing from there")
                break
            good.append(entry)
        if good and not self._intact(good[-1]["activations_file"], good[-1]["activations_sha256"]):
            # only the newest activations are kept, so there is nothing earlier to fall back to
            say("quantize", "journal activations do not match their hash; starting from layer 1")
            return []
        return good

    def _intact(self, name: str, sha256: str) -> bool:
        path = self.directory / name
        return path.is_file() and file_sha256(path) == sha256

    def restore(
        self, adapter: ModelAdapter, result: QuantResult, store: LayerStore | None = None
    ) -> tuple[int, list[torch.Tensor]] | None:
        """(layers restored, inputs of the next layer), or None when there is nothing to resume.

        With a `store` (a streamed model), each restored layer is loaded, overwritten from the
        journal and stored again, exactly as if it had just been quantized.
        """
        from safetensors import safe_open

        entries = self._read()
        if not entries:
            return None
        for entry in entries:
            layer = adapter.layers[int(entry["index"])]
            if store is not None:
                store.load(layer)
            with safe_open(str(self.directory / entry["layer_file"]), "pt") as handle:
                meta = handle.metadata()
                state = layer.module.state_dict()
                with torch.no_grad():
                    for name, tensor in state.items():
                        tensor.copy_(handle.get_tensor(f"param.{name}"))
                for address, info in json.loads(meta["weights"]).items():
                    result.weights[address] = PackedWeight(
                        handle.get_tensor(f"codes.{address}"), tuple(info["shape"]), handle.get_tensor(f"scale.{address}"),
                        handle.get_tensor(f"zero.{address}"), int(info["bits"]), bool(info["sym"]),
                    )
                result.rows.extend(ReportRow(**row) for row in json.loads(meta["rows"]))
            if store is not None:
                store.store(layer, result)
        last = entries[-1]
        with safe_open(str(self.directory / last["activations_file"]), "pt") as handle:
            inputs = [handle.get_tensor(f"batch.{i}") for i in range(int(handle.metadata()["batches"]))]
        self.entries = entries
        say("quantize", f"resuming after layer {len(entries)}/{len(adapter.layers)} from {str(self.directory)!r}")
        return len(entries), inputs

    def record(self, layer: DecoderLayer, result: QuantResult, weights_before: int, rows_before: int, outputs: list[torch.Tensor]) -> None:
        """Write layer `layer`'s quantized state and its outputs, then add it to the journal."""
        self.directory.mkdir(parents=True, exist_ok=True)
        addresses = list(result.weights)[weights_before:]
        tensors = {f"param.{name}": t for name, t in layer.module.state_dict().items()}
        info = {}
        for address in addresses:
            packed = result.weights[address]
            tensors.update({f"codes.{address}": packed.codes, f"scale.{address}": packed.scale, f"zero.{address}": packed.zero})
            info[address] = {"shape": list(packed.shape), "bits": packed.bits, "sym": packed.sym}
        rows = [asdict(row) for row in result.rows[rows_before:]]
        name = f"layer-{layer.index:05d}.safetensors"
        layer_hash = _save(tensors, self.directory / name, {"weights": json.dumps(info), "rows": json.dumps(rows)})
        activations = f"activations-{layer.index:05d}.safetensors"
        act_hash = _save({f"batch.{i}": x for i, x in enumerate(outputs)}, self.directory / activations, {"batches": str(len(outputs))})
        previous = self.entries[-1]["activations_file"] if self.entries else None
        self.entries.append(
            {"index": str(layer.index), "layer_file": name, "layer_sha256": layer_hash,
             "activations_file": activations, "activations_sha256": act_hash}
        )
        write_json(self.directory / JOURNAL, {"fingerprint": self.fingerprint, "layers": self.entries})
        if previous:
            (self.directory / previous).unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
