"""Git's how-tos, technical notes, guides and user manual (Debian ``git-doc``): their AsciiDoc sources.

License: GPL-2.0-only (Git's documentation). One raw document per ``.txt`` file under
``usr/share/doc/git-doc``: ``howto/``, ``technical/``, ``user-manual.txt`` and the top-level
guides. Left out: the per-command manual pages (``git-*.txt``, ``gitk(1)`` ...: manuals rather
than how-tos) and the untitled fragments that other pages include. Levels:

* coarse: a top section (``== Title`` or a title underlined with ``---``; when a page's only
  heading of that depth opens it, it is the page title and the next depth counts as top);
* middle: a subsection (the next depth: ``=== Title`` or ``~~~``);
* fine: a paragraph (blank-line-separated block; a delimited listing / literal / example block
  stays whole, with any blank lines inside it).

Markup reduced to plain text: heading adornments, comments, attribute and anchor lines, include /
ifdef lines, and the ``linkgit:`` / ``link:`` / ``<<xref>>`` macros.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, read_source_text, skip
from datamodules.corpus.sources.text_blocks import UnitBuilder, document

DOC_DIR = "usr/share/doc/git-doc"
UNDERLINES = {"=": 0, "-": 1, "~": 2, "^": 3, "+": 4}  # two-line title underline -> section depth
ONE_LINE_TITLE = re.compile(r"(=+)\s+(\S.*?)(?:\s+=+)?\s*\n?")
DELIMITER = re.compile(r"(-{4,}|\.{4,}|={4,}|\*{4,}|_{4,}|\+{4,}|/{4,}|\|={3,}|--)\s*\n?")
MARKUP_LINE = re.compile(  # lines that only carry markup
    r"(?://(?!/).*"  # a comment
    r"|\[\[[^\]]*\]\]|\[[\w ,.=\"'-]*\]"  # an anchor or an attribute list ("[verse]", "[source,c]")
    r"|(?:include|ifdef|ifndef|ifeval|endif)::.*"  # preprocessor lines
    r"|:[\w-]+:.*)\s*\n?"  # a document attribute
)
MACROS = [  # inline macros -> their text: linkgit:git-log[1], link:url[text], <<anchor,text>>, url[text]
    (re.compile(r"linkgit:([\w.-]+)\[(\d)\]"), r"\1(\2)"),
    (re.compile(r"link:[^\s\[]+\[([^\]]+)\]"), r"\1"),
    (re.compile(r"<<[^,>]+,\s*([^>]+)>>"), r"\1"),
    (re.compile(r"<<([^>]+)>>"), r"\1"),
    (re.compile(r"(https?://[^\s\[]+)\[([^\]]+)\]"), r"\2 (\1)"),
]


def _markup(line: str) -> bool:
    return bool(DELIMITER.fullmatch(line) or MARKUP_LINE.fullmatch(line)) or line.strip() == "+"


def _title(lines: list[str], i: int) -> tuple[int, str, int] | None:
    """(depth, text, line count) of a section title starting at line ``i``, if one does."""
    line = lines[i]
    if i > 0 and lines[i - 1].strip() and not MARKUP_LINE.fullmatch(lines[i - 1]):
        return None  # a title follows a blank line (or an anchor / attribute line)
    one = ONE_LINE_TITLE.fullmatch(line)
    if one and len(one[1]) <= 5:
        return len(one[1]) - 1, one[2], 1
    if i + 1 < len(lines) and line.strip() and not line[0].isspace() and not _markup(line):
        under = lines[i + 1].rstrip()
        if len(set(under)) == 1 and under[0] in UNDERLINES and abs(len(under) - len(line.rstrip())) <= 2:
            return UNDERLINES[under[0]], line.strip(), 2
    return None


def inline(text: str) -> str:
    for pattern, replacement in MACROS:
        text = pattern.sub(replacement, text)
    return text


def units_from_asciidoc(source: str, need_title: bool = False) -> list[Unit] | None:
    """Units of a page, or None when it has no section title (or no page title, if ``need_title``)."""
    lines = source.splitlines(keepends=True)
    titles: dict[int, tuple[int, str, int]] = {}
    i, delimiter = 0, None
    while i < len(lines):  # find the titles outside delimited blocks
        if delimiter is not None:
            delimiter = None if lines[i].rstrip() == delimiter else delimiter
        elif (title := _title(lines, i)) is not None:
            titles[i] = title
            i += title[2]
            continue
        elif DELIMITER.fullmatch(lines[i]):
            delimiter = lines[i].rstrip()
        i += 1
    if not titles or (need_title and titles[min(titles)][0] != 0):
        return None  # an included fragment, not a page
    depths = sorted({depth for depth, _, _ in titles.values()})
    if [d for d, _, _ in titles.values()].count(depths[0]) == 1 and titles[min(titles)][0] == depths[0]:
        depths = depths[1:]  # a lone heading opening the page is its title, not a section
    level_of = {depth: min(rank, 2) for rank, depth in enumerate(depths)}  # top sections 0, next 1, deeper 2

    out = UnitBuilder()
    i, delimiter, block_indent = 0, None, 0
    while i < len(lines):
        line = lines[i]
        if delimiter is not None:  # inside a delimited block: kept whole (comment blocks dropped)
            if not delimiter.startswith("//"):
                out.add(line)
            delimiter = None if line.rstrip() == delimiter else delimiter
        elif i in titles:
            depth, text, count = titles[i]
            out.heading(level_of.get(depth, 2), inline(text) + "\n")  # the page title: fine (the start is coarse)
            i += count
            continue
        elif not line.strip():
            out.add(line)
        elif not MARKUP_LINE.fullmatch(line) and line.strip() != "+":  # "+" joins a block to a list item
            if i == 0 or not lines[i - 1].strip() or MARKUP_LINE.fullmatch(lines[i - 1]):
                indent = len(line.expandtabs()) - len(line.lstrip())
                if indent <= block_indent + 1:  # a block indented 2+ deeper continues the one above (an item body)
                    out.boundary(2)  # a paragraph (or a delimited block) starts after a blank line
                block_indent = indent
            if DELIMITER.fullmatch(line):
                delimiter = line.rstrip()
            if not (delimiter or "").startswith("//"):
                out.add(inline(line))
        i += 1
    return out.finish()


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    base = root / DOC_DIR
    for path in sorted(base.rglob("*.txt")):
        if path.parent == base and path.name.startswith("git-"):
            continue  # a command's manual page
        source = read_source_text(path)
        if source is None or re.match(r"\S+\(1\)\n", source):  # "gitk(1)": a command's manual page too
            continue
        units = units_from_asciidoc(source, need_title=path.parent == base)  # top level: pages have a title
        if units is None:
            skip(path, "no title (an included fragment, not a page)")
        elif doc := document(root, path, units):
            yield doc


SOURCES = [
    Source(
        name="git-howto",
        category="howto",
        license="GPL-2.0-only",
        level_names=("section", "subsection", "paragraph"),
        packages=(
            PackageSpec(
                "deb", "git-doc", "1:2.39.5-0+deb12u3",
                sha256="3c89668a11053a6bafade3de1f611f4613db31e082af63f43d8c5b69ad8795ec",
                filename="git-doc_1%3a2.39.5-0+deb12u3_all.deb",
            ),
        ),
        parse=parse,
    )
]
