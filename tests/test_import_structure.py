"""The package's import graph has no cycles, lazy imports inside functions included, and the
layers the architecture guide names stay apart (evaluate/, export/ and tokenizer/ never import the
training loop; config at the bottom)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in (SRC / "glotta").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # Importing a package runs its __init__; a module's own package is no edge.
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_below_the_loop_do_not_import_it():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith(
            ("glotta.evaluate", "glotta.export", "glotta.tokenizer", "glotta.models")
        ):
            assert "glotta.train.loop" not in targets, name
    for name, targets in graph.items():  # config at the bottom: its modules import nothing else
        if name == "glotta.config" or name.startswith("glotta.config."):
            assert all(t == "glotta.errors" or t.startswith("glotta.config") for t in targets), name


def _heavy_imports_of(argv: list[str]) -> list[str]:
    """Run ``glotta ARGV`` in a fresh interpreter; which of torch and transformers it imported."""
    import subprocess
    import sys

    script = f"""
import runpy, sys
sys.argv = ["glotta", *{argv!r}]
try:
    runpy.run_module("glotta", run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return eval(result.stdout.strip().splitlines()[-1])


def test_the_data_stages_do_not_import_torch(tmp_path):
    """`glotta corpus`, `tokenizer` and `pack` validate the whole recipe, model families included,
    but build no model: they must not import torch (~5 s and ~350 MB a start, paid once per
    corpus task and per pack). Only the tokenizer stage needs transformers (to write the
    tokenizer files transformers loads)."""
    from tests.conftest import TINY_OVERRIDES

    run_dir = str(tmp_path / "r")
    sets = [arg for o in TINY_OVERRIDES for arg in ("--set", o)]
    assert _heavy_imports_of(["corpus", "demo", "--run-dir", run_dir, *sets]) == []
    assert _heavy_imports_of(["tokenizer", "--run-dir", run_dir]) == ["transformers"]
    assert _heavy_imports_of(["pack", "--run-dir", run_dir]) == []
    assert (tmp_path / "r" / "shards" / "COMPLETE.json").is_file()  # the stages really ran
