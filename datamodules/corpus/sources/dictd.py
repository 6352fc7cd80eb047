"""Dictionaries in dictd format (``NAME.index`` + ``NAME.dict.dz``) from Debian ``dict-*`` packages.

* GCIDE (``dict-gcide``): Webster 1913 + WordNet, GPL-2.0-or-later ("dictionary");
* The Devil's Dictionary (``dict-devil``): Ambrose Bierce, public domain ("dictionary");
* FOLDOC (``dict-foldoc``): GFDL-1.1-or-later ("encyclopedia");
* The Jargon File 4.4.7 (``dict-jargon``): public domain ("encyclopedia").

The ``.index`` lists ``headword<TAB>offset<TAB>length`` (base-64 numbers) into the ``.dict`` text, which
is gzip-compatible dictzip. Entries are read in file order; several headwords may share one entry, and
the ``00-database-*`` / ``00database*`` entries are dictd metadata, left out. Inside an entry the format
marks blank-line-separated paragraphs and numbered senses (``   2. ...``):

* coarse: an entry starts;
* middle: a paragraph opening a numbered sense (GCIDE also: a ``{phrase}`` sub-definition);
* fine: any other blank-line-separated paragraph (quotation, note, synonyms, follow-on prose).

One raw document per dictionary and first letter of the entries (``gcide/A``; ``#`` for the rest).
"""

from __future__ import annotations

import gzip
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, clean_units, skip

DICTD = Path("usr/share/dictd")
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"  # dictd's digits, most significant first
METADATA = re.compile(r"00-?database")  # 00-database-info, 00databaseinfo (dict-devil drops the dashes)
SENSE = re.compile(r"[ \t]{1,4}\d+\.(?:\s|$)")  # "   2. ..."; deeper indents are wrapped citations ("  29.")
GCIDE_MIDDLE = re.compile(r"[ \t]{1,4}(?:\d+\.(?:\s|$)|\{[^}\n]+\})")  # a sense or a "{Phrase}, meaning" block


def b64_number(digits: str) -> int:
    value = 0
    for char in digits:
        value = value * 64 + B64.index(char)  # ValueError on a foreign digit
    return value


def read_index(path: Path) -> list[tuple[str, int, int]] | None:
    """(headword, offset, length) rows, or None (reported) for a missing, undecodable or malformed index."""
    try:
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            headword, offset, length = line.split("\t")[:3]  # ValueError on fewer than 3 fields
            rows.append((headword, b64_number(offset), b64_number(length)))
    except FileNotFoundError:
        skip(path, "missing index")
        return None
    except UnicodeDecodeError as err:
        skip(path, f"undecodable bytes (utf-8, at byte {err.start})")
        return None
    except ValueError:
        skip(path, "malformed index line")
        return None
    if not rows:
        skip(path, "empty file")
        return None
    return rows


def read_dict(folder: Path, name: str) -> tuple[Path, bytes] | None:
    """The dictionary's text bytes from NAME.dict.dz (dictzip = gzip) or a plain NAME.dict."""
    packed, plain = folder / f"{name}.dict.dz", folder / f"{name}.dict"
    try:
        if packed.is_file():
            with gzip.open(packed) as f:
                return packed, f.read()
        return plain, plain.read_bytes()
    except FileNotFoundError:
        skip(plain, "missing dict file")
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        skip(packed, "not a gzip/dictzip file")
    return None


def entries(rows: list[tuple[str, int, int]], data: bytes) -> Iterator[tuple[str, bytes]]:
    """(a headword, entry bytes) in file order; an entry runs to the next one, keeping the blank line between."""
    starts: dict[int, tuple[str, int]] = {}
    metadata: set[int] = set()
    for headword, offset, length in rows:
        starts.setdefault(offset, (headword, length))  # any one headword names it in skip messages
        if METADATA.match(headword):
            metadata.add(offset)  # GCIDE also names these 00-gcide-*, 00-web1913-*: same offsets
    ordered = sorted(starts)
    for offset, following in zip(ordered, ordered[1:] + [len(data)]):
        headword, length = starts[offset]
        if offset not in metadata:
            yield headword, data[offset : max(following, offset + length)]


def entry_units(text: str, middle: re.Pattern, headword_block: bool) -> list[Unit]:
    """One unit per blank-line-separated paragraph; the first opens the entry (level 0)."""
    paragraphs: list[str] = []
    after_blank = True
    for line in text.splitlines(keepends=True):
        if line.strip() and after_blank and paragraphs and paragraphs[-1].strip():
            paragraphs.append(line)  # a paragraph starts after a blank line
        elif paragraphs:
            paragraphs[-1] += line  # continues the paragraph (or joins the leading blank lines)
        else:
            paragraphs.append(line)
        after_blank = not line.strip()
    if headword_block and len(paragraphs) > 1:  # FOLDOC / Jargon: a bare headword block precedes the body
        paragraphs[:2] = [paragraphs[0] + paragraphs[1]]
    return [Unit(p, 0 if i == 0 else 1 if middle.match(p) else 2) for i, p in enumerate(paragraphs)]


def group_key(entry: str) -> str:
    """The entry's first two letters, accents dropped ("Éclat" -> "Ec"); "#" for digits and symbols.

    Two letters give a big dictionary hundreds of raw documents, so its train / validation / test
    split (drawn per raw document) is balanced. The entry's own text is used, not an index
    headword: an entry is also indexed under words it mentions (GCIDE's "Haminura" under
    "Erythrinus macrodon")."""
    letters = [c for c in unicodedata.normalize("NFKD", entry.lstrip()[:8]) if c.isascii() and c.isalpha()]
    first = entry.lstrip()[:1]
    if not letters or not unicodedata.normalize("NFKD", first)[:1].isalpha():
        return "#"
    return letters[0].upper() + (letters[1].lower() if len(letters) > 1 else "")


def parse_dictionary(root: Path, name: str, middle: re.Pattern, headword_block: bool) -> Iterator[RawDocument]:
    rows = read_index(root / DICTD / f"{name}.index")
    found = read_dict(root / DICTD, name) if rows else None
    if rows is None or found is None:
        return
    path, data = found
    groups: dict[str, list[Unit]] = {}
    for headword, raw in entries(rows, data):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:  # GCIDE has 3 stray cp1252 bytes: drop those entries only
            skip(f"{path}:{headword}", f"undecodable bytes (utf-8, at byte {err.start})")
            continue
        units = entry_units(text, middle, headword_block)
        if units and units[0].text.strip():  # a blank slice would open no entry: leave it out
            groups.setdefault(group_key(text), []).extend(units)
    if not groups:
        skip(path, "no entries")
        return
    for key in sorted(groups):
        yield RawDocument(doc_id=f"{name}/{key}", file=str(path.relative_to(root)), units=clean_units(groups[key]))


def make_parser(name: str, middle: re.Pattern, headword_block: bool) -> Callable[[list[Path]], Iterator[RawDocument]]:
    def parse(roots: list[Path]) -> Iterator[RawDocument]:
        return parse_dictionary(roots[0], name, middle, headword_block)

    return parse


def deb(name: str, version: str, sha256: str) -> tuple[PackageSpec]:
    return (PackageSpec("deb", name, version, sha256=sha256, filename=f"{name}_{version}_all.deb"),)


NOTES = "Units are the paragraphs dictd entries are made of (blank-line separated); line breaks inside them are wraps. "
SOURCES = [
    Source(
        name="gcide",
        category="dictionary",
        license="GPL-2.0-or-later",
        level_names=("entry", "numbered sense / {phrase} definition", "paragraph"),
        packages=deb("dict-gcide", "0.48.5+nmu2", "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f"),
        parse=make_parser("gcide", GCIDE_MIDDLE, headword_block=False),
        notes=NOTES + "Middle: paragraphs opening '   N.' senses or '   {Phrase}, ...' sub-definitions; the first "
        "sense often shares the headword paragraph. 3 entries with stray cp1252 bytes are skipped.",
    ),
    Source(
        name="devil",
        category="dictionary",
        license="public domain",
        level_names=("entry", "numbered sense", "paragraph"),
        packages=deb("dict-devil", "1.0-13.1", "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154"),
        parse=make_parser("devil", SENSE, headword_block=False),
        notes=NOTES + "Bierce numbers no senses, so middle boundaries fall only at entries; fine = definition "
        "paragraph or quoted verse block.",
    ),
    Source(
        name="foldoc",
        category="encyclopedia",
        license="GFDL-1.1-or-later",
        level_names=("entry", "numbered sense", "paragraph"),
        packages=deb("dict-foldoc", "20230119-1", "745cbedb55c2da609cc88ee0284e9d11a67a11ae3709daf7bad0e895ac3294c3"),
        parse=make_parser("foldoc", SENSE, headword_block=True),
        notes=NOTES + "The headword line(s) block is joined to the first body paragraph. Debian's few added "
        "entries (Dictionary.debian, Joey Hess / R. Hilliard) carry a verbatim-copying notice.",
    ),
    Source(
        name="jargon",
        category="encyclopedia",
        license="public domain",
        level_names=("entry", "numbered sense", "paragraph"),
        packages=deb("dict-jargon", "4.4.7-3.1", "405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1"),
        parse=make_parser("jargon", SENSE, headword_block=True),
        notes=NOTES + "The headword + pronunciation block is joined to the first body paragraph.",
    ),
]
