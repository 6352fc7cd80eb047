"""Linux man-pages (Debian ``manpages`` and ``manpages-dev``, bookworm): troff sources rendered to plain text.

License: the man-pages' own permissive terms (mostly "Linux-man-pages-copyleft", some BSD / MIT / GPL
pages; each page states its own). One raw document per page; ``.so`` redirect stubs and alias
symlinks are left out. Levels:

* coarse: a ``.SH`` section;
* middle: a ``.SS`` subsection, or a ``.TP`` / ``.IP`` tagged item (an option, a flag, an error);
* fine: a paragraph (``.PP`` / ``.P`` / ``.LP`` / ``.sp`` / blank line, bullet items).

Filled text is joined into one line per paragraph (as troff would fill it); ``.nf`` / ``.EX``
examples and tables keep their lines.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, skip
from datamodules.corpus.sources.text_blocks import UnitBuilder, document

SPECIAL = {  # \(xx and \[xx] named characters
    "aq": "'", "dq": '"', "bu": "•", "em": "—", "en": "–", "ha": "^", "ti": "~", "lq": "“", "rq": "”",
    "oq": "‘", "cq": "’", "ga": "`", "+-": "±", "de": "°", "dg": "†", "ra": "→", "la": "←", "sd": "″",
    "fm": "′", "mu": "×", "di": "÷", "co": "©", "rg": "®", "tm": "™", "hy": "-", "<=": "≤", ">=": "≥",
    "!=": "≠", "sc": "§", "ua": "↑", "da": "↓", "rs": "\\", "sl": "/", "at": "@", "sh": "#", "Do": "$",
}
STRINGS = {"lq": "“", "rq": "”", "-": "-", "Tm": "™", "R": "®"}  # \*x strings of man / tzfile pages
ZERO_WIDTH = set("&:%|^c{}),/!?")  # \& \: \% \c ...: break points and spacing, no text
SINGLE = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "t": "\t", ".": ".", "`": "`", "'": "'"}
ESCAPE = re.compile(
    r"""\\(?:
        [fF](?:\[[^\]]*\]|\(..|.)           # font change: dropped
      | s[+-]?\d+                            # type size: dropped
      | \*(?:\[(?P<sb>[^\]]*)\]|\((?P<sp>..)|(?P<s1>.))   # defined string
      | \((?P<c2>..) | \[(?P<cb>[^\]]*)\]    # named character
      | N'(?P<num>\d+)'                      # character by number
      | [wbhvlLoDXZ]'[^']*'                  # width, motions, drawing: dropped
      | [nkg](?:\[[^\]]*\]|\(..|.)           # number registers: dropped
      | (?P<one>.) )""",
    re.X,
)
ARG = re.compile(r'"((?:[^"]|"")*)"?|((?:\\.|[^\s\\])+)')  # a quoted or bare macro argument
FONT_ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI", "SB"}  # arguments joined without spaces
FONT_SPACED = {"B", "I", "SM"}  # arguments joined with spaces
PARAGRAPH = {"PP", "P", "LP", "HP", "sp"}
SKIP_BLOCK_END = {"de": "..", "de1": "..", "ig": "..", "am": ".."}  # macro definitions: skipped to their end
BULLETS = {"•", "*", "-", "o", "+"}


def render_escapes(text: str) -> str:
    """Plain text of a troff line: fonts dropped, named characters and common escapes replaced."""
    text = re.split(r'(?<!\\)\\"', text, maxsplit=1)[0]  # an in-line comment runs to the line's end

    def replace(m: re.Match) -> str:
        if (name := m["sb"] or m["sp"] or m["s1"]) is not None:
            return STRINGS.get(name, "")
        if (name := m["c2"] or m["cb"]) is not None:
            if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):  # \[u00E9]
                return chr(int(name[1:], 16))
            return SPECIAL.get(name, "")
        if m["num"]:
            return chr(int(m["num"]))
        if m["one"] is not None:
            return SINGLE.get(m["one"], "" if m["one"] in ZERO_WIDTH else m["one"])
        return ""

    return ESCAPE.sub(replace, text)


def macro_args(rest: str) -> list[str]:
    args = []
    for m in ARG.finditer(rest):
        args.append(render_escapes(m[1].replace('""', '"') if m[1] is not None else m[2]))
    return args


class ManRenderer:
    """Walks the troff lines of one page and feeds rendered text to a :class:`UnitBuilder`."""

    def __init__(self) -> None:
        self.out = UnitBuilder()
        self.fill: list[str] = []  # words of the line being filled
        self.fill_mode = True
        self.tag_level: int | None = None  # the next text line is a heading / item tag of this level (-1: .TQ)
        self.indent = ""  # body indentation of a tagged item
        self.table_format = False  # inside .TS, before the format line ending in "."

    def flush(self) -> None:
        if self.fill:
            self.out.add(self.indent + " ".join(self.fill) + "\n")
            self.fill = []

    def paragraph(self, level: int, indent: str = "") -> None:
        self.flush()
        self.out.separate()
        self.out.boundary(level)
        self.indent = indent

    def text(self, line: str) -> None:
        if self.tag_level is not None:  # a heading or item tag stands on its own line
            level, self.tag_level = self.tag_level, None
            self.flush()
            self.out.heading(level if level >= 0 else None, line.strip() + "\n")
            return
        if self.fill_mode:
            if line.strip():
                self.fill.append(line.strip())
        else:
            self.out.add(self.indent + line + "\n")

    def macro(self, name: str, args: list[str]) -> None:
        if name in ("SH", "SS"):
            self.paragraph(0 if name == "SH" else 1)
            self.tag_level = 0 if name == "SH" else 1
            if args:
                self.text(" ".join(args))
        elif name == "TP":
            self.paragraph(1, "    ")
            self.tag_level = 1
        elif name == "TQ":  # one more tag line of the same item
            self.flush()
            self.tag_level = -1
        elif name == "IP":
            tag = args[0].strip() if args else ""
            if tag in BULLETS or re.fullmatch(r"\(?\w{1,3}[.)]", tag):  # bullets and "1." items are paragraphs
                self.paragraph(2, "")
                self.fill.append(tag)
            elif tag:
                self.paragraph(1, "    ")
                self.out.heading(1, tag + "\n")
            else:
                self.paragraph(2, self.indent)  # an untagged indented paragraph continues the item
        elif name in PARAGRAPH:
            if self.fill_mode:
                self.paragraph(2, self.indent if name == "sp" else "")
            else:  # inside an example: only a blank line
                self.out.add("\n")
        elif name in ("nf", "EX"):
            self.flush()
            self.fill_mode = False
        elif name in ("fi", "EE"):
            self.fill_mode = True
        elif name == "br":
            self.flush()
        elif (name in FONT_ALTERNATING or name in FONT_SPACED or name in ("SY", "OP")) and args:
            self.text(("" if name in FONT_ALTERNATING else " ").join(args))  # without args: the next line
        elif name == "q" and args:  # tzfile's quoting macro
            self.text(f"“{args[0]}”" + "".join(args[1:]))
        elif name in ("UE", "ME") and args and self.fill:  # punctuation right after a link
            self.fill[-1] += args[0]
        elif name == "TS":
            self.flush()
            self.fill_mode, self.table_format = False, True
        elif name == "TE":
            self.fill_mode = True
        # every other request (.TH, .RS/.RE, .in, .ad, .nh, .PD, .UR, .ft, .ds, .if ...) only sets layout

    def line(self, raw: str) -> None:
        if self.table_format:  # tbl options and format lines end with ";" and "."
            self.table_format = not raw.rstrip().endswith(".")
            return
        if raw[:1] in ".'":
            name, _, rest = raw[1:].strip().partition(" ")
            self.macro(name, macro_args(rest))
        elif not raw.strip() and self.fill_mode:
            self.paragraph(2, self.indent)
        elif not self.fill_mode and raw.strip() in ("_", "=", "T{", "T}"):
            return  # table rules and text-block markers
        else:
            self.text(render_escapes(raw.replace("T{", "").replace("T}", "")))


def units_from_troff(source: str) -> list[Unit]:
    renderer = ManRenderer()
    skip_to: str | None = None  # end marker of a block being skipped (macro definitions, .if \{ ... \})
    source = re.sub(r"(?<!\\)\\\n", "", source)  # a line ending in a backslash continues on the next
    for raw in source.splitlines():
        if skip_to is not None:
            if raw.strip().startswith(skip_to) or (skip_to == r"\}" and r"\}" in raw):
                skip_to = None
            continue
        if re.match(r"""^[.']\s*\\"|^\.\s*$""", raw):  # comment line or empty request
            continue
        name = raw[1:].split(maxsplit=1)[0] if raw[:1] in ".'" and raw[1:].strip() else ""
        if name in SKIP_BLOCK_END:
            skip_to = SKIP_BLOCK_END[name]
        elif name in ("if", "ie", "el"):
            skip_to = r"\}" if r"\{" in raw and r"\}" not in raw else None  # conditionals: dropped
        else:
            renderer.line(raw)
    renderer.flush()
    return renderer.out.finish()


def read_man(path: Path) -> str | None:
    """The page's troff text (gunzipped), or None (reported) when it is empty, corrupt or undecodable."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            skip(path, "not gzip data")
            return None
    if not data.strip():
        skip(path, "empty file")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        skip(path, f"undecodable bytes (utf-8, at byte {err.start})")
        return None


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    for root in roots:
        for path in sorted((root / "usr/share/man").glob("man*/*")):
            if path.is_symlink() or not path.is_file():
                continue  # aliases of another page
            source = read_man(path)
            if source is None:
                continue
            if re.search(r"^\.so\s", source, re.M) and len(source.splitlines()) < 10:
                skip(path, "redirect")
                continue
            if doc := document(root, path, units_from_troff(source)):
                yield doc


SOURCES = [
    Source(
        name="linux-man-pages",
        category="manuals",
        license="Linux-man-pages-copyleft (per page; some BSD / MIT / GPL pages)",
        level_names=("section (.SH)", "subsection (.SS) / tagged item (.TP, .IP)", "paragraph"),
        packages=(
            PackageSpec("deb", "manpages", "6.03-2", filename="manpages_6.03-2_all.deb",
                        sha256="efa1ba4cd19ad7baeae959c9209a7eb74be2ebb858bcabb412597bfc9f588c91"),
            PackageSpec("deb", "manpages-dev", "6.03-2", filename="manpages-dev_6.03-2_all.deb",
                        sha256="96f55cb5e26231d5567c89b692bced63825a14a2d5bd18fdf16ea2ed44eb9838"),
        ),
        parse=parse,
    )
]
