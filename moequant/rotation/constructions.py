"""Unnormalised ±1 Hadamard matrices of the orders that are not powers of two.

Three classical families, each checked by HHᵀ = nI in the tests rather than trusted:
Paley I (order q+1, q ≡ 3 mod 4 a prime power), Paley II (order 2(q+1), q ≡ 1 mod 4), and
Goethals–Seidel (order 4n) from four circulant ±1 sequences whose periodic autocorrelations
cancel. The Goethals–Seidel sequences are found by a deterministic search restricted to
unions of orbits of a multiplier subgroup of (Z/n)^×, which makes the search a small
meet-in-the-middle problem; that is how 156 = 4·39 and 172 = 4·43 are obtained.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np

from moequant.rotation.galois import jacobsthal, prime_power

GS_MAX_ORBITS = 12
GS_MAX_N = 47
GS_MAX_CANDIDATES = 1500


def paley_one(q: int) -> np.ndarray:
    """Order q+1 from the skew Jacobsthal matrix of GF(q), q ≡ 3 (mod 4)."""
    size = q + 1
    core = np.zeros((size, size), dtype=np.int64)
    core[0, 1:] = 1
    core[1:, 0] = -1
    core[1:, 1:] = jacobsthal(q)
    return core + np.eye(size, dtype=np.int64)


def paley_two(q: int) -> np.ndarray:
    """Order 2(q+1) from the symmetric conference matrix of GF(q), q ≡ 1 (mod 4)."""
    size = q + 1
    conference = np.zeros((size, size), dtype=np.int64)
    conference[0, 1:] = 1
    conference[1:, 0] = 1
    conference[1:, 1:] = jacobsthal(q)
    plus = np.array([[1, 1], [1, -1]], dtype=np.int64)
    zero = np.array([[1, -1], [-1, -1]], dtype=np.int64)
    return np.kron(conference, plus) + np.kron(np.eye(size, dtype=np.int64), zero)


def _circulant(first_row: np.ndarray) -> np.ndarray:
    n = len(first_row)
    return np.stack([np.roll(first_row, shift) for shift in range(n)])


def goethals_seidel_array(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Order 4n from first rows of circulants with AAᵀ + BBᵀ + CCᵀ + DDᵀ = 4nI."""
    n = len(a)
    A, B, C, D = (_circulant(row) for row in (a, b, c, d))
    R = np.fliplr(np.eye(n, dtype=np.int64))
    return np.block(
        [
            [A, B @ R, C @ R, D @ R],
            [-B @ R, A, D.T @ R, -C.T @ R],
            [-C @ R, -D.T @ R, A, B.T @ R],
            [-D @ R, C.T @ R, -B.T @ R, A],
        ]
    )


def _subgroups(n: int) -> list[list[int]]:
    """Cyclic subgroups of (Z/n)^×, largest first (fewer orbits, smaller search)."""
    found: dict[tuple[int, ...], None] = {}
    for g in range(2, n):
        if math.gcd(g, n) != 1:
            continue
        members, x = {1}, g
        while x != 1:
            members.add(x)
            x = x * g % n
        found.setdefault(tuple(sorted(members)), None)
    return sorted((list(h) for h in found), key=lambda h: (-len(h), h))


def _orbits(n: int, subgroup: list[int]) -> list[list[int]]:
    seen: set[int] = set()
    orbits = []
    for x in range(n):
        if x not in seen:
            orbit = sorted({x * h % n for h in subgroup})
            seen.update(orbit)
            orbits.append(orbit)
    return orbits


def _periodic_autocorrelation(sequences: np.ndarray) -> np.ndarray:
    spectrum = np.fft.fft(sequences, axis=1)
    return np.rint(np.fft.ifft(np.abs(spectrum) ** 2, axis=1).real).astype(np.int64)


def _quadruple_from_orbits(n: int, orbits: list[list[int]]) -> np.ndarray | None:
    """Four ±1 sequences, each constant on the orbits, with cancelling autocorrelations."""
    indicator = np.zeros((len(orbits), n), dtype=np.int64)
    for row, orbit in enumerate(orbits):
        indicator[row, orbit] = 1
    sequences = np.array(list(itertools.product((1, -1), repeat=len(orbits))), dtype=np.int64) @ indicator
    power = np.abs(np.fft.fft(sequences, axis=1)) ** 2
    sequences = sequences[np.all(power <= 4 * n + 1e-6, axis=1)]
    if not 0 < len(sequences) <= GS_MAX_CANDIDATES:
        return None
    shifts = [orbit[0] for orbit in orbits if orbit[0] != 0]
    paf = _periodic_autocorrelation(sequences)[:, shifts]
    first, second = np.triu_indices(len(sequences))
    sums = np.ascontiguousarray(paf[first] + paf[second])
    void = np.dtype((np.void, sums.dtype.itemsize * sums.shape[1]))
    negated = np.ascontiguousarray(-sums).view(void).ravel()
    _, left, right = np.intersect1d(sums.view(void).ravel(), negated, return_indices=True)
    if len(left) == 0:
        return None
    i, j = int(left[0]), int(right[0])
    return sequences[[first[i], second[i], first[j], second[j]]]


@lru_cache(maxsize=None)
def goethals_seidel_sequences(n: int) -> np.ndarray | None:
    """First rows (4 × n) for a Goethals–Seidel Hadamard matrix of order 4n, or None."""
    if n % 2 == 0 or n > GS_MAX_N:
        return None
    for subgroup in _subgroups(n):
        orbits = _orbits(n, subgroup)
        if len(orbits) <= GS_MAX_ORBITS:
            found = _quadruple_from_orbits(n, orbits)
            if found is not None:
                return found
    return None


def _is_prime_power_mod4(q: int, residue: int) -> bool:
    return q > 1 and q % 4 == residue and prime_power(q) is not None


def construction_name(order: int) -> str | None:
    """Which family builds an order (not a power of two), or None when none applies."""
    if order in (1, 2):
        return "sylvester"
    if _is_prime_power_mod4(order - 1, 3):
        return f"paley1(q={order - 1})"
    if order % 2 == 0 and _is_prime_power_mod4(order // 2 - 1, 1):
        return f"paley2(q={order // 2 - 1})"
    if order % 4 == 0 and goethals_seidel_sequences(order // 4) is not None:
        return f"goethals_seidel(n={order // 4})"
    return None


@lru_cache(maxsize=None)
def base_matrix(order: int) -> np.ndarray:
    """The unnormalised ±1 Hadamard matrix of `order` named by `construction_name`."""
    name = construction_name(order)
    if name is None:
        raise ValueError(f"no Hadamard construction for order {order}")
    if name == "sylvester":
        matrix = np.array([[1]]) if order == 1 else np.array([[1, 1], [1, -1]])
    elif name.startswith("paley1"):
        matrix = paley_one(order - 1)
    elif name.startswith("paley2"):
        matrix = paley_two(order // 2 - 1)
    else:
        matrix = goethals_seidel_array(*goethals_seidel_sequences(order // 4))
    matrix = matrix.astype(np.int64)
    matrix.setflags(write=False)
    return matrix
