"""The Python 3.11 documentation (Debian ``python3.11-doc``): its reStructuredText page sources.

License: PSF-2.0 (the Python documentation license). One raw document per page, in two sources:
the FAQ pages (``faq/``) and everything else. reST headings are a title line underlined (and maybe
overlined) with punctuation; the order in which each page first uses an adornment style gives its
heading ranks (rank 0 is the page title, which opens the document). Levels:

* technical docs: coarse = a rank-1 section, middle = a rank-2 section, fine = a paragraph;
* FAQ: coarse = a group of questions (any rank above the deepest), middle = a question (the
  deepest rank), fine = a paragraph.

Paragraphs are blank-line-separated blocks; a literal block (after ``::``), a code directive and a
note-like directive stay whole with their indented body; an API description (``.. function::``)
keeps its signature with its first paragraph. Markup is reduced to plain text: adornment lines,
directive syntax and options, index entries, comments and roles (``:func:`x``` -> ``x``) go.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, read_source_text
from datamodules.corpus.sources.text_blocks import UnitBuilder, document

SOURCES_DIR = "usr/share/doc/python3.11/html/_sources"
ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1{2,}[ \t]*\n?")  # a run of one punctuation character
DIRECTIVE = re.compile(r"(\s*)\.\.\s+([\w:-]+)::[ \t]*(.*)", re.S)
DROPPED = {  # directives that print nothing, with their whole body
    "index", "module", "sectionauthor", "moduleauthor", "highlight", "toctree", "currentmodule", "include",
    "tabularcolumns", "testsetup", "testcleanup", "literalinclude", "only", "contents", "image", "figure",
    "program", "miscnews", "limited-api-list", "audit-event", "raw", "meta", "role", "default-role",
}
LITERAL = {  # directives whose body is code, printed as it is
    "code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "productionlist", "parsed-literal",
}
LABELS = {  # note-like directives: a label line, then their body in the same unit
    "versionadded": "New in version {}.", "versionchanged": "Changed in version {}:",
    "deprecated": "Deprecated since version {}:", "note": "Note:", "warning": "Warning:", "seealso": "See also:",
    "availability": "Availability: {}", "impl-detail": "CPython implementation detail:", "important": "Important:",
    "caution": "Caution:", "tip": "Tip:", "hint": "Hint:", "attention": "Attention:", "danger": "Danger:",
    "error": "Error:", "admonition": "{}", "rubric": "{}", "topic": "{}", "sidebar": "{}", "epigraph": "",
    "list-table": "{}", "table": "{}", "deprecated-removed": "Deprecated since version {}:",
}
CONTAINERS = {"glossary"}  # print nothing themselves; their entries are paragraphs of their own
OPTION_LINE = re.compile(r"\s+:[\w-]+:")  # ":synopsis: ..." under a directive
INLINE = re.compile(
    r"``(?P<lit>.+?)``"  # inline literal
    r"|:[\w:.+-]+:`(?P<role>[^`]*)`"  # interpreted text with a role
    r"|`(?P<link>[^`]*?)\s*<[^>`]*>`__?"  # hyperlink with a target
    r"|`(?P<ref>[^`]+)`_{0,2}"  # reference or default role
    r"|\*\*(?P<strong>\S(?:.*?\S)?)\*\*"
    r"|(?<![\w*\\])\*(?P<em>[^\s*](?:[^*]*?[^\s*\\])?)\*(?![\w*])"
)


def _inline_sub(m: re.Match) -> str:
    if m["role"] is not None:
        text = re.sub(r"\s*<[^>]*>$", "", m["role"]) if "<" in m["role"] else m["role"]  # "text <target>"
        if text.startswith("~"):  # ~a.b.c shows only the last name
            text = text[1:].rsplit(".", 1)[-1]
        return text.lstrip("!")
    return next(g for g in m.groups() if g is not None)


def inline(text: str) -> str:
    return INLINE.sub(_inline_sub, text)


def headings(lines: list[str]) -> dict[int, tuple[int, tuple[str, bool], str]]:
    """First line -> (number of lines, adornment style, title) for each section heading."""
    found: dict[int, tuple[int, tuple[str, bool], str]] = {}
    i = 0
    while i + 1 < len(lines):
        after_blank = i == 0 or not lines[i - 1].strip()
        over = ADORNMENT.fullmatch(lines[i])
        if after_blank and over and i + 2 < len(lines) and lines[i + 1].strip() and lines[i + 2] == lines[i]:
            found[i] = (3, (over[1], True), lines[i + 1].strip())
            i += 3
            continue
        under = ADORNMENT.fullmatch(lines[i + 1])
        title = lines[i].rstrip()
        if after_blank and under and title and not title[0].isspace() and len(lines[i + 1].rstrip()) >= len(title):
            found[i] = (2, (under[1], False), title)
            i += 2
            continue
        i += 1
    return found


def render(chunk: str) -> str:
    """A block as plain text: directive lines become their label or argument, their options go, roles go."""
    out: list[str] = []
    in_options = False  # option lines (":synopsis: ...") follow a directive line directly
    for line in chunk.splitlines(keepends=True):
        if in_options and OPTION_LINE.match(line):
            continue
        directive = DIRECTIVE.match(line)
        in_options = directive is not None
        if directive is None:
            out.append(re.sub(r"^(\s*)\.\. (\[[^\]]*\])", r"\1\2", line))  # ".. [1] note" -> "[1] note"
            continue
        name, args = directive[2], " ".join(directive[3].split())
        if name in LABELS:
            text = LABELS[name].format(args).strip()
        else:
            text = "" if name in DROPPED or name in LITERAL or name in CONTAINERS else args
        if text:
            out.append(directive[1] + text + "\n")
    return inline("".join(out))


def _end_literal_intro(text: str) -> str:
    """The "::" closing a paragraph, as reST prints it: "Example::" -> "Example:", "Example ::" and "::" -> nothing."""
    body = text.rstrip()
    tail = text[len(body) :]
    head, newline, last = body.rpartition("\n")
    if last.strip() == "::":
        return head + tail
    last = last[:-3].rstrip() if last.endswith(" ::") else last[:-1]
    return head + newline + last + tail


def _chunks(lines: list[str], heads: dict[int, tuple]) -> Iterator[tuple[int, str]]:
    """(first line, text) of each heading and each blank-line-separated block (with its trailing blank lines)."""
    i = 0
    while i < len(lines):
        if i in heads:
            yield i, ""
            i += heads[i][0]
            continue
        j = i
        while j < len(lines) and lines[j].strip() and (j == i or j not in heads):  # the block's lines
            j += 1
        while j < len(lines) and not lines[j].strip():  # the blank lines after the block
            j += 1
        yield i, "".join(lines[i:j])
        i = j


def units_from_rst(source: str, heading_level: Callable[[int, int], int]) -> list[Unit]:
    """Units of a page; ``heading_level(rank, n_ranks)`` maps a heading's rank to its unit level."""
    lines = source.splitlines(keepends=True)
    heads = headings(lines)
    ranks: dict[tuple[str, bool], int] = {}
    for _, style, _ in heads.values():
        ranks.setdefault(style, len(ranks))
    out = UnitBuilder()
    owners: list[tuple[int, str]] = []  # (indent, "drop" / "literal" / "keep") of blocks that own deeper text
    glue = False  # the next block continues the current unit (after an API signature)
    seen_heading = False
    for start, chunk in _chunks(lines, heads):
        if start in heads:
            _, style, title = heads[start]
            out.heading(heading_level(ranks[style], len(ranks)), inline(title) + "\n")
            owners, glue, seen_heading = [], False, True
            continue
        if not chunk.strip():
            out.add(chunk)
            continue
        indent = len(chunk) - len(chunk.lstrip(" "))
        while owners and indent <= owners[-1][0]:
            owners.pop()
        mode = owners[-1][1] if owners else None
        if mode == "drop":
            continue
        if mode == "literal":
            out.add(chunk)
            continue
        if not seen_heading and re.fullmatch(r"(:[\w-]+:.*\n)+\s*", chunk):
            continue  # page metadata (":orphan:", ":tocdepth: 2") above the title
        if ADORNMENT.fullmatch(chunk.strip() + "\n"):
            continue  # a transition line: markup only
        directive = DIRECTIVE.match(chunk)
        name = directive[2] if directive else None
        if name in DROPPED or (chunk.lstrip().startswith(".. ") and not directive and chunk.lstrip()[3:4] != "["):
            owners.append((indent, "drop"))  # index entries, comments, link targets ... with their indented body
            continue
        if mode != "keep" and not glue:
            out.boundary(2)
        glue = False
        if name in LITERAL:  # the code follows as an indented block, opening the unit
            owners.append((indent, "literal"))
            continue
        if directive:
            if name in LABELS:
                owners.append((indent, "keep"))
            glue = name not in LABELS and name not in CONTAINERS  # an API signature stays with its paragraph
            out.add(render(chunk))
            continue
        if chunk.lstrip().startswith(">>>"):  # a doctest block prints as it is
            out.add(chunk)
            continue
        if chunk.rstrip().endswith("::"):  # a literal block follows, indented deeper than this last line
            last = chunk.rstrip().rsplit("\n", 1)[-1]
            owners.append((len(last) - len(last.lstrip(" ")), "literal"))
            chunk = _end_literal_intro(chunk)
        out.add(render(chunk))
    return out.finish()


def technical_level(rank: int, n_ranks: int) -> int:
    return {0: 0, 1: 0, 2: 1}.get(rank, 2)  # rank 0 is the page title: the document start


def faq_level(rank: int, n_ranks: int) -> int:
    return 1 if 0 < rank == n_ranks - 1 else 0  # questions are the deepest headings; groups above them


def make_parse(faq: bool) -> Callable[[list[Path]], Iterator[RawDocument]]:
    def parse(roots: list[Path]) -> Iterator[RawDocument]:
        root = roots[0]
        base = root / SOURCES_DIR
        for path in sorted(base.rglob("*.rst.txt")):
            if (path.relative_to(base).parts[0] == "faq") != faq:
                continue
            source = read_source_text(path)
            if source is None:
                continue
            units = units_from_rst(source, faq_level if faq else technical_level)
            if doc := document(root, path, units):
                yield doc

    return parse


PACKAGE = PackageSpec(
    "deb", "python3.11-doc", "3.11.2-6+deb12u9",
    sha256="5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
    filename="python3.11-doc_3.11.2-6+deb12u9_all.deb",
)
SOURCES = [
    Source(
        name="python-docs",
        category="technical-docs",
        license="PSF-2.0",
        level_names=("section", "subsection", "paragraph"),
        packages=(PACKAGE,),
        parse=make_parse(faq=False),
    ),
    Source(
        name="python-faq",
        category="faq",
        license="PSF-2.0",
        level_names=("question group", "question", "paragraph"),
        packages=(PACKAGE,),
        parse=make_parse(faq=True),
    ),
]
