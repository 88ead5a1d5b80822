"""Code versions come from the verbs' real import closures, found without importing anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from moequant.code_version import code_version, import_closure, verb_module

ROOT = Path(__file__).resolve().parents[1]


def _closure(verb: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in import_closure(ROOT, ["moequant.cli", verb_module(ROOT, verb)])}


def test_quantize_sees_what_it_imports_lazily_and_every_registered_algorithm() -> None:
    files = _closure("quantize")
    assert "moequant/calib/records.py" in files, "quantize reads calibration tokens through records.py"
    assert {"moequant/quant/gptq.py", "moequant/quant/awq.py", "moequant/quant/rtn.py"} <= files, "the registry imports every algorithm"
    assert not any(f.startswith("moequant/report/") for f in files)
    assert not any(f.startswith("moequant/commands/") and f.endswith(("tables.py", "build_demo.py")) for f in files)


def test_package_data_files_count_with_their_package() -> None:
    files = _closure("make-tasks")
    assert any(f.startswith("moequant/eval/task_templates/") and f.endswith(".yaml") for f in files)


def test_tables_do_not_depend_on_quantization_code() -> None:
    assert not any(f.startswith("moequant/quant/") for f in _closure("tables"))


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "moequant", tmp_path / "moequant", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_an_edit_changes_exactly_the_verbs_that_import_it(package_copy: Path) -> None:
    verbs = ("quantize", "calibrate", "tables", "build-demo")
    before = {verb: code_version(package_copy, verb) for verb in verbs}
    with open(package_copy / "moequant" / "calib" / "records.py", "a") as handle:
        handle.write("\n# edited\n")
    after = {verb: code_version(package_copy, verb) for verb in verbs}
    assert [verb for verb in verbs if before[verb] != after[verb]] == ["quantize", "calibrate"]


def test_unknown_verb_is_named() -> None:
    with pytest.raises(ValueError, match="no-such-verb"):
        verb_module(ROOT, "no-such-verb")
