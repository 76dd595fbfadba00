"""The package's import graph, read from the source (ast): no circles, and the modules that read
tables (figures, theory, verdicts, summaries, reports) never reach TensorFlow or Keras."""

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "initsuite"
HEAVY = ("tensorflow", "keras", "tensorflow_datasets")
# Modules that read tables only; the future analysis/ folder holds them. Not yet: export (the TensorBoard
# files are written with TensorFlow's event protos) and sweep.py, which holds the summary but launches runs.
# Modules that read tables only: everything under analysis/, plus the table schema and the mean-field maths
# it uses. (The TensorBoard export, sweep/export.py, writes TensorFlow's event protos, so it lives in sweep/.)
ANALYSIS = tuple(sorted(f"analysis.{p.stem}" for p in (PACKAGE / "analysis").glob("*.py") if p.stem != "__init__")) \
    + ("tables", "setup.meanfield")
# The data flow: a stage may import the top-level modules (config, registry, tables, atomic) and earlier
# stages, never a later one; analysis imports no stage that trains (measure, run, sweep).
STAGES = ("setup", "measure", "run", "sweep")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> Set[str]:
    """The modules a file imports (``from initsuite import x`` counts as ``initsuite.x``)."""
    tree = ast.parse(path.read_text())
    nodes = list(ast.walk(tree))
    if top_level_only:  # module-level code, including under `if`/`try` at the top
        nodes = [n for top in tree.body for n in ast.walk(top)
                 if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        nodes += [n for top in tree.body if isinstance(top, ast.ClassDef) for n in top.body
                  if isinstance(n, (ast.Import, ast.ImportFrom))]
    out: Set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            out.add(n.module)
            if n.module == "initsuite" or n.module.startswith("initsuite."):  # from initsuite.setup import data
                out |= {f"{n.module}.{a.name}" for a in n.names}
    return out


def _type_checking_only(path: Path) -> Set[str]:
    tree = ast.parse(path.read_text())
    out: Set[str] = set()
    for n in tree.body:
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            for m in ast.walk(n):
                if isinstance(m, ast.ImportFrom) and m.module:
                    out.add(m.module)
                elif isinstance(m, ast.Import):
                    out |= {a.name for a in m.names}
    return out


def graph(top_level_only: bool) -> Dict[str, Set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    out = {}
    for name, path in files.items():
        deps = _imports(path, top_level_only) - _type_checking_only(path)
        out[name] = {d for d in deps if d in files or d.split(".")[0] in HEAVY}
        out[name].discard(name)
        out[name].discard("initsuite")  # the package itself: its __init__ imports nothing eagerly
    return out


def find_cycle(g: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(n: str):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def reach(g: Dict[str, Set[str]], start: str) -> Dict[str, str]:
    """Every module ``start`` imports, directly or not, with the module it came through."""
    seen, todo = {start: ""}, [start]
    while todo:
        n = todo.pop()
        for m in g.get(n, ()):
            if m not in seen:
                seen[m] = n
                todo.append(m)
    return seen


def test_the_graph_finds_a_planted_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(g) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    assert _imports(Path(__file__), top_level_only=True) >= {"ast", "pathlib", "pytest"}


def test_no_import_circles_not_even_through_imports_inside_functions():
    g = graph(top_level_only=False)
    assert "initsuite.setup.lsuv" in g["initsuite.analysis.theory"] and "initsuite.tables" in g["initsuite.analysis.plots"]
    assert find_cycle(g) == []


def _stage(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "initsuite" else None


def test_imports_flow_one_way_config_setup_measure_run_sweep():
    """At import time. (A data-driven initializer, setup/lsuv.py, runs measure's taps when it
    initializes a model, and imports them then: measurement is what it is made of.)"""
    g = graph(top_level_only=True)
    wrong = []
    for mod, deps in g.items():
        here = _stage(mod)
        for d in deps:
            there = _stage(d)
            if there is None or there == here or d.split(".")[0] != "initsuite":
                continue
            if here == "analysis" and there in ("measure", "run", "sweep"):
                wrong.append((mod, d))
            elif here in STAGES and there in STAGES and STAGES.index(there) > STAGES.index(here):
                wrong.append((mod, d))
            elif here in ("setup", "measure", "run") and there == "analysis":
                wrong.append((mod, d))
    assert not wrong, f"imports against the data flow: {wrong}"
    assert {_stage(m) for m in g} >= {"setup", "measure", "run", "sweep", "analysis"}


@pytest.mark.parametrize("module", ANALYSIS)
def test_analysis_modules_never_import_tensorflow(module):
    g = graph(top_level_only=True)
    name = f"initsuite.{module}"
    assert name in g, f"no module {name}"
    heavy = {m: via for m, via in reach(g, name).items() if m.split(".")[0] in HEAVY}
    assert not heavy, f"{name} imports {sorted(heavy)} (through {sorted(set(heavy.values()))})"
    # and no function of theirs does it directly either
    direct = {d for d in graph(top_level_only=False)[name] if d.split(".")[0] in HEAVY}
    assert not direct, f"{name} imports {sorted(direct)} inside a function"
