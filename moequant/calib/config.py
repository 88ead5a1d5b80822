"""The calibration-set request: which source, how many samples, and the EBSS search knobs.

Validated on construction so a bad value fails before a model is loaded, with one line
naming the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from moequant.corpora import TEXT_PREFIX, hub_names
from moequant.errors import require

CALIB_DATASETS = hub_names("calibration")
SOURCES = ("ebss", *CALIB_DATASETS)
GREEDY_TOKENS = 3


@dataclass
class CalibConfig:
    """Defaults follow method §2: τ = 1.2, w = 4, 128 samples of 512 tokens."""

    source: str = "ebss"
    nsamples: int = 128
    seqlen: int = 512
    tau: float = 1.2
    width: int = 4
    seed: int = 0
    batch_size: int = 16
    enumerate_first_token: bool = False
    data_path: str | None = None
    no_repeat_ngram: int = 0
    """EBSS only: no sample repeats an n-gram of this length (0, the paper's search: no block).
    Small self-sampling models loop on boilerplate; the block is the measured remedy."""

    def __post_init__(self) -> None:
        require(
            self.source in SOURCES or (self.source.startswith(TEXT_PREFIX) and len(self.source) > len(TEXT_PREFIX)),
            f"unknown calibration source {self.source!r}; allowed: {', '.join(SOURCES)}, text:PATH",
        )
        require(self.nsamples >= 1, f"nsamples must be >= 1, got {self.nsamples}")
        require(self.seqlen >= 2, f"seqlen must be >= 2 (one token to condition on, one to predict), got {self.seqlen}")
        require(self.tau > 0, f"tau must be > 0, got {self.tau}")
        require(self.width >= 1, f"width must be >= 1, got {self.width}")
        require(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        require(
            self.no_repeat_ngram == 0 or self.no_repeat_ngram >= 2,
            f"no_repeat_ngram must be 0 (off) or an n-gram length >= 2, got {self.no_repeat_ngram}",
        )
        require(
            self.no_repeat_ngram == 0 or self.is_ebss,
            f"no_repeat_ngram applies to EBSS only, not to source {self.source!r}",
        )
        require(
            self.data_path is None or self.source in CALIB_DATASETS,
            f"a data path only applies to the hub sources ({', '.join(CALIB_DATASETS)}), not to {self.source!r}",
        )

    @property
    def is_ebss(self) -> bool:
        return self.source == "ebss"

    @property
    def text_path(self) -> str | None:
        return self.source[len(TEXT_PREFIX) :] if self.source.startswith(TEXT_PREFIX) else None
