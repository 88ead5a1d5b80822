"""Finite fields GF(p^k), just enough for the quadratic character Paley constructions need.

Hadamard factors such as 28 (GF(27)) and 52 (GF(25)) come from prime-power fields, so a
prime-only Legendre symbol would leave those sizes out.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np


def prime_power(q: int) -> tuple[int, int] | None:
    """(p, k) with q = p^k and p prime, or None."""
    if q < 2:
        return None
    p = next(d for d in itertools.count(2) if q % d == 0)
    k = 0
    while q % p == 0:
        q //= p
        k += 1
    return (p, k) if q == 1 else None


def _poly_mod(poly: list[int], modulus: list[int], p: int) -> list[int]:
    """Remainder of `poly` by a monic `modulus` (coefficients lowest degree first)."""
    rest = list(poly)
    degree = len(modulus) - 1
    for top in range(len(rest) - 1, degree - 1, -1):
        coeff = rest[top] % p
        if coeff:
            for i, m in enumerate(modulus):
                rest[top - degree + i] = (rest[top - degree + i] - coeff * m) % p
    return [c % p for c in rest[:degree]] + [0] * max(0, degree - len(rest))


def _monic_polys(degree: int, p: int) -> list[list[int]]:
    return [list(low) + [1] for low in itertools.product(range(p), repeat=degree)]


def _irreducible(p: int, k: int) -> list[int]:
    """The first monic degree-k polynomial over GF(p) with no monic factor of degree ≤ k/2."""
    for candidate in _monic_polys(k, p):
        if all(
            any(_poly_mod(candidate, factor, p)) for d in range(1, k // 2 + 1) for factor in _monic_polys(d, p)
        ):
            return candidate
    raise AssertionError(f"no irreducible polynomial of degree {k} over GF({p})")


class GaloisField:
    """Elements are the integers 0..q-1, read as base-p digit vectors (polynomial coefficients)."""

    def __init__(self, q: int) -> None:
        found = prime_power(q)
        if found is None:
            raise ValueError(f"{q} is not a prime power")
        self.q = q
        self.p, self.k = found
        self.modulus = _irreducible(self.p, self.k) if self.k > 1 else [0, 1]

    def _digits(self, a: int) -> list[int]:
        return [(a // self.p**i) % self.p for i in range(self.k)]

    def _number(self, digits: list[int]) -> int:
        return sum(d * self.p**i for i, d in enumerate(digits))

    def sub(self, a: int, b: int) -> int:
        return self._number([(x - y) % self.p for x, y in zip(self._digits(a), self._digits(b))])

    def mul(self, a: int, b: int) -> int:
        if self.k == 1:
            return a * b % self.p
        x, y = self._digits(a), self._digits(b)
        product = [0] * (2 * self.k - 1)
        for i, xi in enumerate(x):
            for j, yj in enumerate(y):
                product[i + j] += xi * yj
        return self._number(_poly_mod(product, self.modulus, self.p))

    def quadratic_character(self) -> list[int]:
        """χ(a) for every element: 0 at 0, +1 on nonzero squares, −1 elsewhere."""
        squares = {self.mul(a, a) for a in range(1, self.q)}
        return [0] + [1 if a in squares else -1 for a in range(1, self.q)]


@lru_cache(maxsize=None)
def jacobsthal(q: int) -> np.ndarray:
    """Q[a, b] = χ(a − b) over GF(q) as an int8 matrix (cached; do not modify)."""
    field = GaloisField(q)
    chi = np.array(field.quadratic_character(), dtype=np.int8)
    if field.k == 1:
        index = (np.arange(q)[:, None] - np.arange(q)[None, :]) % q
    else:
        index = np.array([[field.sub(a, b) for b in range(q)] for a in range(q)])
    matrix = chi[index]
    matrix.setflags(write=False)
    return matrix
