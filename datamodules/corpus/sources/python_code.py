"""Python source code: the standard library of the Python running the build (PSF-2.0).

Read with ``ast``, so boundaries fall only where statements start:

* coarse: each top-level ``def`` / ``class`` (its decorators and the comments right above it included);
* middle: each method or nested definition of a class, and each run of other top-level statements;
* fine: a statement start preceded by a blank line (programmers' paragraphs inside a body).

One raw document per module file; tests, site-packages and generated tables are left out.
"""

from __future__ import annotations

import ast
import platform
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, clean_units, read_source_text, skip

EXCLUDED_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "encodings", "pydoc_data", "lib2to3"}
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _first_line(node: ast.stmt) -> int:
    """1-based first line of a statement, decorators included."""
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])


def line_levels(source: str) -> dict[int, int]:
    """0-based line index -> level of the boundary that starts there (lines without a boundary are absent)."""
    tree = ast.parse(source)
    levels: dict[int, int] = {}

    def mark(line: int, level: int) -> None:  # keep the coarsest level seen for a line
        levels[line - 1] = min(level, levels.get(line - 1, 2))

    previous_was_def = True
    for node in tree.body:
        if isinstance(node, DEFS):
            mark(_first_line(node), 0)
            if isinstance(node, ast.ClassDef):
                for member in node.body:
                    if isinstance(member, DEFS):
                        mark(_first_line(member), 1)
        elif previous_was_def:  # a run of plain top-level statements starts
            mark(_first_line(node), 1)
        previous_was_def = isinstance(node, DEFS)
    for node in ast.walk(tree):  # fine: statements opening a blank-line-separated paragraph
        if isinstance(node, ast.stmt):
            mark(_first_line(node), 2)
    return levels


def units_from_source(source: str) -> list[Unit]:
    lines = source.splitlines(keepends=True)
    levels = line_levels(source)
    starts: dict[int, int] = {}
    for line, level in levels.items():
        if level == 2 and (line == 0 or lines[line - 1].strip()):
            continue  # a fine boundary needs a blank line before the statement
        # comments directly above a boundary belong to what follows them
        while line > 0 and lines[line - 1].lstrip().startswith("#"):
            line -= 1
        starts[line] = min(level, starts.get(line, 2))
    starts.setdefault(0, 0)
    cut = sorted(starts)
    return clean_units(
        [Unit("".join(lines[a:b]), starts[a]) for a, b in zip(cut, cut[1:] + [len(lines)])]
    )


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if EXCLUDED_PARTS & set(rel.parts) or rel.name.startswith("test_"):
            continue
        source = read_source_text(path)
        if source is None:
            continue
        try:
            units = units_from_source(source)
        except SyntaxError as err:
            skip(path, f"not parseable as Python ({err.msg})")
            continue
        if len(units) < 2:
            skip(path, "no boundaries")
            continue
        yield RawDocument(doc_id=str(rel), file=str(rel), units=units)


SOURCES = [
    Source(
        name="python-stdlib",
        category="code",
        license="PSF-2.0",
        level_names=("top-level definition", "method / statement run", "code paragraph"),
        packages=(
            PackageSpec("local", "python-stdlib", platform.python_version(), filename=sysconfig.get_paths()["stdlib"]),
        ),
        parse=parse,
    )
]
