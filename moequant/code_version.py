"""The code version of a CLI verb: a hash over the package files that the verb really runs.

The workflow reruns a stage when its code version changes. A hand-kept list of package
folders per stage drifts from the code (quantize reads calibration records through
`calib/records.py`, so an edit there must rerun it); the import closure cannot drift. It is
found statically, without importing anything (the workflow process has no torch): every
`import` and `from ... import` of a `moequant` module, at module level or inside functions,
followed to its file, with each package's `__init__.py` and its data files (task templates,
schemas). A package scanned with `pkgutil.iter_modules` (the algorithm registry) counts with
all its modules, except the verb table itself, which imports only the verb being run.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path

PACKAGE = "moequant"
VERBS = f"{PACKAGE}.commands"
ENTRY = f"{PACKAGE}.cli"


def _module_file(root: Path, name: str) -> Path | None:
    """The file of module `name` (dotted, starting with the package) under `root`, the package's parent."""
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)
def _imports(root: Path, path: Path, _stamp: tuple[int, int]) -> set[str]:
    """Dotted names of the package modules that `path` imports (each candidate checked to exist).

    Cached by file stamp (mtime, size): the workflow hashes nine stages whose closures share
    most files, and an edited file gets a new stamp.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(root, path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            for alias in node.names:
                found.add(f"{base}.{alias.name}")
                aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "iter_modules" and node.args:
            target = node.args[0]
            if isinstance(target, ast.Attribute) and target.attr == "__path__" and isinstance(target.value, ast.Name):
                scanned = aliases.get(target.value.id)
                if scanned and scanned != VERBS and (init := _module_file(root, scanned)) is not None:
                    found.update(f"{scanned}.{p.stem}" for p in init.parent.glob("*.py") if p.stem != "__init__")
    return {name for name in found if name.split(".")[0] == PACKAGE and _module_file(root, name) is not None}


def _with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(root: Path, modules: list[str]) -> list[Path]:
    """Every package file that importing `modules` executes, plus each reached package's data files."""
    seen: set[str] = set()
    pending = [parent for name in modules for parent in _with_parents(name)]
    while pending:
        name = pending.pop()
        if name in seen or (path := _module_file(root, name)) is None:
            continue
        seen.add(name)
        stat = path.stat()
        for imported in _imports(root, path, (stat.st_mtime_ns, stat.st_size)):
            pending.extend(_with_parents(imported))
    files = {_module_file(root, name) for name in seen}
    for name in seen:
        init = root.joinpath(*name.split(".")) / "__init__.py"
        if init.is_file():
            files.update(_data_files(init.parent))
    return sorted(path for path in files if path is not None)


def _data_files(folder: Path) -> list[Path]:
    """Non-Python files of a package folder and of its subfolders that are not packages themselves."""
    found = []
    for path in folder.iterdir():
        if path.is_file() and path.suffix not in (".py", ".pyc"):
            found.append(path)
        elif path.is_dir() and path.name != "__pycache__" and not (path / "__init__.py").exists():
            found.extend(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return found


def verb_module(root: Path, verb: str) -> str:
    """The module of `moequant <verb>`: the one whose NAME is `verb`."""
    folder = root.joinpath(*VERBS.split("."))
    for path in sorted(folder.glob("*.py")):
        if re.search(rf"^NAME\s*=\s*[\"']{re.escape(verb)}[\"']", path.read_text(), re.MULTILINE):
            return _module_name(root, path)
    raise ValueError(f"no moequant verb {verb!r} in {folder}")


def code_version(root: Path, *verbs: str) -> str:
    """16 hex digits over the relative path and bytes of every file that `moequant <verb>` runs, for each verb of a stage."""
    digest = hashlib.sha256()
    for path in import_closure(root, [ENTRY, *(verb_module(root, verb) for verb in verbs)]):
        if path == _module_file(root, PACKAGE):
            continue  # the version string alone: a release must not invalidate every cached artifact
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
