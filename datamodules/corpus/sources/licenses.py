"""Full texts of the SPDX licenses (npm ``spdx-license-list``: ``package/licenses/<id>.json``).

License: each text is under its own terms (most allow verbatim copying); the package metadata is
CC0-1.0. One raw document per license (an identifier whose text repeats an earlier one, such as a
deprecated alias, is left out). Boundaries come from the texts' own numbering and headings:

* coarse: the license start, a top-level numbered section ("1. Definitions.", "Section 2 --",
  "Article 3"), an all-capitals heading line ("TERMS AND CONDITIONS") or a Markdown ``#``/``##``;
* middle: a numbered sub-clause ("2.1", "(a)", "b.", "(iv)") or a ``###`` heading;
* fine: a paragraph (blank-line separated; one per line when a text has long unwrapped lines
  and no blank lines).

A text with fewer than two paragraphs has no boundaries and is left out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, clean_units, read_source_text, skip
from datamodules.corpus.sources.text_blocks import document, paragraphs

NAMED_SECTION = re.compile(r"(?:Section|SECTION|Article|ARTICLE|§)\s*\d+\b")
NUMBERED = re.compile(r"\d+\.(?:\s|$)")  # "1. " but not "1.1"
SUB_CLAUSE = re.compile(r"\d+\.\d+|\(?[a-z]\)\s|[a-z]\.\s|\([ivx]+\)|\(\d+\)|\d+\)\s")
MARKDOWN = re.compile(r"(#+)\s")


def _is_caps_heading(paragraph: str) -> bool:
    """A short one-line paragraph without lower-case letters, like "TERMS AND CONDITIONS"."""
    line = paragraph.strip()
    letters = [c for c in line if c.isalpha()]
    return "\n" not in line and len(line) <= 80 and len(letters) >= 4 and not any(c.islower() for c in letters)


def paragraph_level(paragraph: str, named_sections: bool) -> int:
    """Level of the boundary at a paragraph start; ``named_sections``: the text numbers "Section 1" style."""
    text = paragraph.lstrip()
    if heading := MARKDOWN.match(text):
        return 0 if len(heading[1]) <= 2 else 1
    if _is_caps_heading(text) or NAMED_SECTION.match(text):
        return 0
    if NUMBERED.match(text):  # under named sections, "1." numbers a list inside a clause
        return 1 if named_sections else 0
    return 1 if SUB_CLAUSE.match(text) else 2


def units_from_license(text: str) -> list[Unit]:
    blocks = paragraphs(text)
    lines = text.splitlines(keepends=True)
    if len(blocks) < 2 and len(lines) > 1 and max(map(len, lines)) > 150:  # unwrapped text: a line per paragraph
        blocks = lines
    named = any(NAMED_SECTION.match(b.lstrip()) for b in blocks)
    return clean_units([Unit(b, paragraph_level(b, named)) for b in blocks])


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    seen: set[str] = set()  # digests of the texts already used
    paths = (root / "package/licenses").glob("*.json")
    # of ids sharing a text, keep the current one ("GPL-2.0-only" over the deprecated "GPL-2.0" / "GPL-2.0+")
    for path in sorted(paths, key=lambda p: (not p.stem.endswith(("-only", "-or-later")), p.stem)):
        raw = read_source_text(path)
        if raw is None:
            continue
        try:
            text = json.loads(raw).get("licenseText")
        except (json.JSONDecodeError, AttributeError):
            skip(path, "not a license JSON object")
            continue
        if not isinstance(text, str) or not text.strip():
            skip(path, "no license text")
            continue
        digest = hashlib.sha256(text.strip().encode()).hexdigest()
        if digest in seen:
            skip(path, "duplicate license text")
            continue
        seen.add(digest)
        units = units_from_license(text.replace("\r\n", "\n"))
        if doc := document(root, path, units, doc_id=path.stem):
            yield doc


SOURCES = [
    Source(
        name="spdx-licenses",
        category="legal",
        license="various (the licenses' own terms; package CC0-1.0)",
        level_names=("license / top-level section", "numbered sub-clause", "paragraph"),
        packages=(
            PackageSpec(
                "npm", "spdx-license-list", "6.12.0",
                sha256="54cc8d13086187333ca1457c8edaa06d9a412144f076aa7f7c1b59c4f3b0a1ef",
                filename="spdx-license-list-6.12.0.tgz",
            ),
        ),
        parse=parse,
    )
]
