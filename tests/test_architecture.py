"""The layout is the architecture: each folder of u2eval/ is a stage, and a module imports only from its own
folder and the stages below it (docs/architecture.md). Read from the code's imports, function-level ones too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. "" is the ground: the modules directly in u2eval/ (errors, records, resources, provenance).
STAGES = ("", "benchmark", "data", "scoring", "grounded", "models", "run", "judges", "reports", "view", "cli")
# The model adapters sit beside models/: they know the protocol, the records and the benchmark's facts (the
# replay reads the official kit's files with scoring/'s reader, the grounded stand-in writes boxes with
# grounded/'s conventions), never how runs are made, stored or reported.
ADAPTERS_MAY_IMPORT = {"", "benchmark", "data", "scoring", "grounded", "models"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from u2eval.data import tsv`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _modules(package: str) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted((ROOT / package).rglob("*.py"))}


def _stage(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 3 and not (ROOT / "u2eval" / parts[-1]).is_dir():
        return ""  # u2eval.errors, u2eval.records, ... (and u2eval itself)
    return parts[1]


def _ours(imported: str, known: set[str]) -> str | None:
    """The u2eval module an import names (``from u2eval.data import tsv`` names u2eval.data.tsv)."""
    while imported and imported not in known:
        imported = imported.rpartition(".")[0]
    return imported or None


def test_no_module_imports_a_stage_above_its_own() -> None:
    modules = _modules("u2eval")
    upward = []
    for module, imports in modules.items():
        if module == "u2eval.__main__":
            continue  # `python -m u2eval` runs the CLI: the one import from the top, by design
        own = STAGES.index(_stage(module))
        for imported in imports:
            target = _ours(imported, set(modules))
            if target is not None and STAGES.index(_stage(target)) > own:
                upward.append(f"{module} imports {target}")
            if imported.startswith("model_adapters"):
                upward.append(f"{module} imports {imported} (adapters are found by name, never imported)")
    assert not upward, "\n".join(sorted(set(upward)))


def test_adapters_import_only_the_protocol_records_and_the_benchmarks_facts() -> None:
    known = set(_modules("u2eval"))
    crossing = [
        f"{module} imports {target}"
        for module, imports in _modules("model_adapters").items()
        for target in (_ours(i, known) for i in imports if i.startswith("u2eval"))
        if target is not None and _stage(target) not in ADAPTERS_MAY_IMPORT
    ]
    assert not crossing, "\n".join(sorted(set(crossing)))


def test_no_import_cycle_between_modules() -> None:
    modules = _modules("u2eval")
    known = set(modules)
    graph: dict[str, set[str]] = defaultdict(set)
    for module, imports in modules.items():
        for imported in imports:
            target = _ours(imported, known)
            if target is not None and target != module and not module.startswith(target + "."):
                graph[module].add(target)  # (a module's own package __init__ is not a cycle)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(modules):
        if start not in state and (cycle := visit(start)) is not None:
            raise AssertionError(" -> ".join(cycle))


def test_the_stages_are_the_folders() -> None:
    folders = {p.name for p in (ROOT / "u2eval").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(STAGES) - {""}


def test_what_finds_the_package_from_inside_it_finds_all_of_it() -> None:
    from u2eval.data.reader_process import import_root
    from u2eval.run.resume import code_files

    assert (import_root() / "u2eval" / "__init__.py").is_file()  # the reader's child imports this very u2eval
    names = {name for name, _ in code_files()}  # the resume stamp's code hash covers every stage
    assert {"records.py", "data/reader.py", "scoring/judging.py", "cli/app.py"} <= names
