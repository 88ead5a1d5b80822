"""The package's static import graph: no circles, and every room imports only rooms below it.

Read with the same static walk that computes the stages' code versions, so it sees imports
inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

from pathlib import Path

from moequant import code_version

ROOT = Path(code_version.__file__).resolve().parents[1]
RANKS = [
    {"", "errors"},
    {"artifacts", "progress", "runtime", "corpora", "code_version"},
    {"memory", "plan"},
    {"models"},
    {"calib", "rotation", "quant", "demo", "report"},
    {"loading"},
    {"eval", "coverage"},
    {"commands"},
    {"cli"},
    {"__main__"},
]


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted((ROOT / "moequant").rglob("*.py")):
        name = code_version._module_name(ROOT, path)
        stat = path.stat()
        graph[name] = code_version._imports(ROOT, path, (stat.st_mtime_ns, stat.st_size)) - {name}
    return graph


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _rank(room: str) -> int:
    return next(i for i, rooms in enumerate(RANKS) if room in rooms)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_room_has_a_rank():
    rooms = {_room(module) for module in _graph()}
    assert rooms <= set().union(*RANKS), f"rooms without a rank: {rooms - set().union(*RANKS)}"


def test_no_import_circles():
    assert _circles(_graph()) == []


def test_the_circle_finder_sees_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_room_reaches_up():
    upward = sorted(
        f"{module} imports {imported}"
        for module, imports in _graph().items()
        for imported in imports
        if _room(module) != _room(imported) and _rank(_room(imported)) >= _rank(_room(module))
    )
    assert upward == []
