from __future__ import annotations

import numpy as np
import pytest
import torch

from moequant.errors import UsageError
from moequant.rotation.constructions import (
    base_matrix,
    construction_name,
    goethals_seidel_sequences,
    paley_one,
    paley_two,
)
from moequant.rotation.galois import GaloisField, prime_power
from moequant.rotation.hadamard import hadamard_matrix, is_supported, plan, random_signs, sylvester
from moequant.rotation.transform import hadamard_transform, resolve_backend, walsh_hadamard
from tests.conftest import cuda_only

REQUIRED_BASES = (12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172)
MODEL_SIZES = (768, 1024, 1408, 2048, 4096, 5632, 6144, 7168, 11008, 14336, 18432)


def _constructible_bases(limit: int = 200) -> list[int]:
    return [m for m in (1, 2, *range(4, limit + 1, 4)) if construction_name(m) is not None]


def test_required_base_orders_are_constructible() -> None:
    for size in REQUIRED_BASES:
        assert is_supported(size), size
    assert plan(40).base == 20 and plan(40).power == 2


@pytest.mark.parametrize("order", _constructible_bases())
def test_every_constructible_base_is_an_integer_hadamard_matrix(order: int) -> None:
    matrix = base_matrix(order)
    assert set(np.unique(matrix)) <= {-1, 1}
    assert np.array_equal(matrix @ matrix.T, order * np.eye(order, dtype=np.int64))


def test_constructions_each_family_directly() -> None:
    for q in (3, 7, 11, 19, 23, 27, 43):
        h = paley_one(q)
        assert np.array_equal(h @ h.T, (q + 1) * np.eye(q + 1, dtype=np.int64)), q
    for q in (5, 9, 13, 17, 25):
        h = paley_two(q)
        assert np.array_equal(h @ h.T, 2 * (q + 1) * np.eye(2 * (q + 1), dtype=np.int64)), q
    for n in (13, 39, 43):
        a, b, c, d = (torch.from_numpy(s).double() for s in goethals_seidel_sequences(n))
        paf = sum(torch.fft.ifft(torch.fft.fft(s).abs() ** 2).real for s in (a, b, c, d))
        assert torch.allclose(paf[1:], torch.zeros(n - 1, dtype=torch.float64), atol=1e-9)


def test_galois_field_of_a_prime_power_has_half_squares() -> None:
    assert prime_power(27) == (3, 3) and prime_power(12) is None
    field = GaloisField(25)
    chi = field.quadratic_character()
    assert chi.count(1) == chi.count(-1) == 12
    assert all(field.mul(a, 1) == a for a in range(25))


@pytest.mark.parametrize("size", [1, 2, 8, 12, 24, 40, 44, 48, 96, 156, 172, 256, 448, 1408])
def test_matrix_is_orthogonal_and_fast_transform_matches(size: int) -> None:
    matrix = hadamard_matrix(size)
    assert torch.allclose(matrix @ matrix.T, torch.eye(size, dtype=torch.float64), atol=1e-12)
    x = torch.randn(3, 2, size, dtype=torch.float64)
    assert torch.allclose(hadamard_transform(x), x @ matrix, atol=1e-12)
    assert torch.allclose(hadamard_transform(x, transpose=True), x @ matrix.T, atol=1e-12)


@pytest.mark.parametrize("size", MODEL_SIZES)
def test_real_model_sizes_transform_orthogonally(size: int) -> None:
    x = torch.randn(4, size, dtype=torch.float64)
    y = hadamard_transform(x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-12)
    assert torch.allclose(hadamard_transform(y, transpose=True), x, atol=1e-12)


def test_walsh_hadamard_is_the_sylvester_product() -> None:
    x = torch.randn(5, 64, dtype=torch.float64)
    assert torch.allclose(walsh_hadamard(x), x @ sylvester(64), atol=1e-12)
    with pytest.raises(ValueError):
        walsh_hadamard(torch.zeros(3, 12))


@pytest.mark.parametrize("size", [6, 33, 188, 0])
def test_unsupported_size_is_one_line_naming_it(size: int) -> None:
    with pytest.raises(UsageError) as err:
        plan(size)
    assert str(size) in str(err.value) and "\n" not in str(err.value)


def test_signs_are_seeded() -> None:
    assert torch.equal(random_signs(64, 3), random_signs(64, 3))
    assert not torch.equal(random_signs(64, 3), random_signs(64, 4))
    assert set(random_signs(64, 3).tolist()) == {-1.0, 1.0}


def test_backend_resolution_on_cpu() -> None:
    x = torch.zeros(2, 8)
    assert resolve_backend("auto", x) == "torch"
    with pytest.raises(UsageError, match="fast_hadamard_transform"):
        resolve_backend("fast_hadamard_transform", x)
    with pytest.raises(UsageError, match="unknown Hadamard backend"):
        resolve_backend("fft", x)


@cuda_only()
def test_cuda_backend_matches_torch() -> None:
    x = torch.randn(16, 1408, device="cuda")
    expected = hadamard_transform(x.double(), backend="torch").float()
    assert torch.allclose(hadamard_transform(x, backend="auto"), expected, atol=1e-4)
