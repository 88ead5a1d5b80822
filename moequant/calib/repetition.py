"""How repetitive a calibration set is: distinct n-gram ratios and the longest repeated span.

Self-sampled text can fall into loops (a quarter of the EBSS samples released for Mixtral
repeat one phrase), and a loop feeds the Hessians the same few activations many times
while σ still looks balanced. These numbers sit beside σ and perplexity in the calibration
summary so a degenerate set is visible before anything is quantized on it.
"""

from __future__ import annotations

from collections.abc import Sequence

NGRAM = 4


def ngrams(ids: Sequence[int], n: int = NGRAM) -> list[tuple[int, ...]]:
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def distinct_ratio(ids: Sequence[int], n: int = NGRAM) -> float:
    """Distinct n-grams over all n-grams of one sample: 1.0 never repeats, near 0 is one loop."""
    grams = ngrams(ids, n)
    return len(set(grams)) / len(grams) if grams else 1.0


def set_distinct_ratio(samples: Sequence[Sequence[int]], n: int = NGRAM) -> float:
    """The same ratio over the n-grams of every sample pooled: samples that copy each other count too."""
    grams = [gram for ids in samples for gram in ngrams(ids, n)]
    return len(set(grams)) / len(grams) if grams else 1.0


def _repeats(ids: Sequence[int], length: int) -> bool:
    seen: set[tuple[int, ...]] = set()
    for gram in ngrams(ids, length):
        if gram in seen:
            return True
        seen.add(gram)
    return False


def longest_repeated_span(ids: Sequence[int]) -> int:
    """Tokens in the longest span that occurs at least twice (overlaps allowed) within one sample.

    A span of length k repeating implies one of length k − 1 does, so the length is found by
    bisection, each probe one pass over the sample's windows.
    """
    low, high = 0, max(len(ids) - 1, 0)
    while low < high:
        mid = (low + high + 1) // 2
        if _repeats(ids, mid):
            low = mid
        else:
            high = mid - 1
    return low


def repetition_summary(samples: Sequence[Sequence[int]]) -> dict[str, object]:
    per_distinct = [distinct_ratio(ids) for ids in samples]
    per_span = [longest_repeated_span(ids) for ids in samples]
    count = max(len(samples), 1)
    return {
        "ngram": NGRAM,
        "distinct_ratio_mean": sum(per_distinct) / count,
        "distinct_ratio_set": set_distinct_ratio(samples),
        "longest_repeat_mean": sum(per_span) / count,
        "longest_repeat_max": max(per_span, default=0),
        "sample_distinct_ratio": per_distinct,
        "sample_longest_repeat": per_span,
    }
