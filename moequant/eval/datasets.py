"""The texts perplexity is measured on: WikiText2 test, C4 validation shard 0, local files.

Where the text comes from is `moequant.corpora`; this module adds how the reference code
(GPTQ/QuaRot) cuts each corpus into windows, and the fingerprint that makes two perplexities
comparable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from moequant.corpora import HUB_DATASETS, TEXT_PREFIX, load_hub_documents, read_text_file
from moequant.eval.config import check_dataset_spec

Protocol = Literal["consecutive", "random"]

DATA_PATH_OPTION = "--data-path (PerplexityConfig.data_path)"


@dataclass(frozen=True)
class HubSource:
    """How the reference code evaluates a Hub corpus: one joined stream, or windows inside documents."""

    protocol: Protocol
    joiner: str = "\n\n"


WINDOW_PROTOCOLS: dict[str, HubSource] = {"wikitext2": HubSource("consecutive"), "c4": HubSource("random")}


@dataclass
class EvalText:
    """Documents plus the protocol that cuts them into windows.

    A consecutive corpus is one stream (WikiText2's documents already joined by blank lines);
    a random-window corpus keeps its documents apart because windows never cross them.
    """

    name: str
    protocol: Protocol
    documents: list[str]
    origin: str

    def sha256(self) -> str:
        """Fingerprint of exactly the text evaluated, so two numbers can be told comparable."""
        digest = hashlib.sha256()
        for document in self.documents:
            encoded = document.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
        return digest.hexdigest()


def load_eval_text(spec: str, data_path: str | None = None) -> EvalText:
    check_dataset_spec(spec)
    if spec.startswith(TEXT_PREFIX):
        path = spec[len(TEXT_PREFIX) :]
        stream = "\n\n".join(read_text_file(path))
        return EvalText(spec, "consecutive", [stream], str(Path(path).expanduser().resolve()))
    source = WINDOW_PROTOCOLS[spec]
    texts = load_hub_documents(spec, "evaluation", data_path, DATA_PATH_OPTION)
    documents = [source.joiner.join(texts)] if source.protocol == "consecutive" else [t for t in texts if t.strip()]
    return EvalText(spec, source.protocol, documents, data_path or HUB_DATASETS[spec, "evaluation"].repo)
