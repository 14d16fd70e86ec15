"""The codebase's own rules (docs/ARCHITECTURE.md §11), read from the source with `ast`:
no import cycles, no module importing another's underscore names, one home per name, no Python
file over 400 lines, and no citation of a document the repository lacks."""

import ast
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backend", "dreamtime_blender")
MAX_LINES = 400


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in python_files(*PACKAGES)}


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def imports(path: Path):
    """(imported module, [names], line) for every import in the file, at any depth, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [alias.name for alias in node.names], node.lineno


def project_edges(path: Path) -> set[str]:
    """The project modules `path` imports: `from pkg import submodule` counts as the submodule."""
    edges = set()
    for target, names, _ in imports(path):
        if target not in MODULES:
            continue
        submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        edges.update(submodules or [target])
        if len(submodules) < len(names):  # names from the package itself, too
            edges.add(target)
    return edges - {module_name(path)}


def defined_names(path: Path) -> set[str]:
    """Names a module defines at its top level (def, class, assignment), not the ones it imports."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def test_no_import_cycles():
    graph = {name: project_edges(path) for name, path in MODULES.items()}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [node, nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert cycles == []


def test_no_module_imports_another_modules_underscore_names():
    found = []
    for path in python_files(*PACKAGES, "scripts") + [ROOT / "build.py"]:
        for target, names, line in imports(path):
            found += [f"{path.relative_to(ROOT)}:{line}: {target}.{n}" for n in names
                      if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
            found += [f"{path.relative_to(ROOT)}:{line}: {target}" for part in target.split(".")[1:] if part.startswith("_")]
    assert found == []


def test_every_imported_name_is_imported_from_its_home():
    """`from M import N` with N defined in M itself (or a submodule of M): no name travels through a second module."""
    found = []
    for path in python_files(*PACKAGES, "tests", "scripts"):
        for target, names, line in imports(path):
            if target not in MODULES:
                continue
            home = defined_names(MODULES[target])
            found += [f"{path.relative_to(ROOT)}:{line}: {n} from {target}" for n in names
                      if n != "*" and n not in home and f"{target}.{n}" not in MODULES]
    assert found == []


def test_no_python_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in python_files(*PACKAGES, "tests", "scripts") + [ROOT / "build.py"]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


# ---------------------------------------------------------------------- citations
CITED_DOCUMENT = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
SECTION = re.compile(r"docs/ARCHITECTURE\.md((?:,? ?§\s?\d+(?:\.\d+)?)+)")
# A document beside the project (its design card, style notes, the shared folder) is never cited.
# The words are split so that this file, which is scanned too, does not cite them itself.
OUTSIDE = re.compile("|".join(["DES" + "IGN §", "DES" + "IGN\\.md", "STY" + "LE\\.md", "/wo" + "rk/", r"(?<![\w.])sha" + "red/"]))


def text_files() -> list[Path]:
    """The repository's own text files (not venvs, builds, run folders or git's). Output folders are
    skipped at the top level only: backend/bench/ is code."""
    outputs = {"dist", "runs", "bench", "bench_sensitivity", "bench_robustness", "images"}
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        skip = outputs | {"__pycache__"} if Path(folder) == ROOT else {"__pycache__", "images"}
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and name not in skip or name == ".ci"]
        files += [Path(folder, name) for name in names if Path(name).suffix in {".py", ".md", ".toml", ".sh", ".txt"} or name == "run"]
    return sorted(files)


def architecture_sections() -> set[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.MULTILINE))


def test_no_file_cites_a_document_outside_the_repository():
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}" for p in text_files()
             for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert found == []


WRITES_DOCUMENT = re.compile(r'atomic_write_text\([^\n]*"([\w.-]+\.md)"')


def written_documents() -> set[str]:
    """Markdown files the backend writes into an output folder (a bench's table): named, not cited."""
    return {name for path in (ROOT / "backend").rglob("*.py") for name in WRITES_DOCUMENT.findall(path.read_text(encoding="utf-8"))}


def test_every_cited_markdown_file_and_architecture_section_exists():
    sections, missing, written = architecture_sections(), [], written_documents()
    assert "prompts.md" in written  # the rule below sees the benches' outputs
    assert {"1", "2", "3", "4", "4.1", "11", "12"} <= sections
    for path in text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for cited in set(CITED_DOCUMENT.findall(text)) - written:
            if not any((base / cited).is_file() for base in (ROOT, path.parent, ROOT / "docs")):
                missing.append(f"{path.relative_to(ROOT)}: {cited}")
        for group in SECTION.findall(text):
            missing += [f"{path.relative_to(ROOT)}: §{s}" for s in re.findall(r"\d+(?:\.\d+)?", group) if s not in sections]
    assert missing == []
