"""Perl's core documentation (Debian ``perl-doc``): POD files rendered to plain text.

License: the same terms as Perl itself (GPL-1.0-or-later OR Artistic-1.0-Perl). One raw document per
``.pod`` file (the generated ``perltoc`` and ``perluniprops`` are left out). Levels:

* coarse: a ``=head1`` section;
* middle: a ``=head2`` subsection, or a named ``=item`` (a function, an option, a variable);
* fine: a paragraph (``=head3`` and deeper headings, bullet and numbered items, verbatim paragraphs).

Formatting codes (``B<>``, ``I<>``, ``C<>``, ``L<>``, ``E<>`` ...) become their plain text; ``=pod``,
``=cut``, ``=over``, ``=back``, ``=encoding``, ``=for`` and ``=begin``/``=end`` blocks are dropped.
"""

from __future__ import annotations

import html.entities
import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, read_source_text
from datamodules.corpus.sources.text_blocks import UnitBuilder, document, paragraphs

EXCLUDED = {"perltoc.pod", "perluniprops.pod"}  # generated: a table of contents, a table of Unicode properties
POD_DIR = "usr/share/perl/5.36.0/pod"
HEADING_LEVEL = {"head1": 0, "head2": 1, "head3": 2, "head4": 2, "head5": 2, "head6": 2}
ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}
CODE_START = re.compile(r"([A-Z])(<+)")  # a formatting code opens: a letter and one or more "<"
NEXT_MARK = re.compile(r"[A-Z]<|>")  # where a code may open or close


def _escape(name: str) -> str:
    """The character named by an ``E<...>`` code."""
    if name in ESCAPES:
        return ESCAPES[name]
    try:
        if name.lower().startswith("0x"):
            return chr(int(name, 16))
        if name.isdigit():
            return chr(int(name, 8) if name.startswith("0") else int(name))
    except (ValueError, OverflowError):
        return ""
    return chr(html.entities.name2codepoint[name]) if name in html.entities.name2codepoint else ""


def _link(text: str) -> str:
    """Plain text of an ``L<...>`` code: its label, or "section in page"."""
    if "|" in text:
        return text.split("|", 1)[0]
    if "://" in text:
        return text
    page, slash, section = text.partition("/")
    if not slash:
        return page.strip('"')
    section = section.strip('"')
    return f"{section} in {page}" if page else section


def render_codes(text: str, pos: int = 0, close: str | None = None) -> tuple[str, int]:
    """Render formatting codes from ``pos`` up to ``close`` (a run of ">"); returns the text and the end position."""
    out: list[str] = []
    while (found := NEXT_MARK.search(text, pos)) is not None:
        out.append(text[pos : found.start()])  # plain text up to the next "X<" or ">"
        pos = found.start()
        if close is not None and text.startswith(close, pos):
            if len(close) == 1 or text[pos - 1].isspace():  # "<< ... >>" closes only after a space
                return "".join(out), pos + len(close)
        match = CODE_START.match(text, pos)
        if match:
            brackets = len(match[2])
            if brackets > 1 and not text[match.end() : match.end() + 1].isspace():
                brackets = 1  # "S<<-- x>": a one-bracket code whose text starts with "<"
            inner, pos = render_codes(text, match.start(2) + brackets, ">" * brackets)
            inner = inner.strip() if brackets > 1 else inner  # "C<< x >>" pads its content with spaces
            code = match[1]
            if code in "XZ":  # index entries and zero-width codes print nothing
                inner = ""
            elif code == "E":
                inner = _escape(inner)
            elif code == "L":
                inner = _link(inner)
            out.append(inner)
            continue
        out.append(text[pos])
        pos += 1
    out.append(text[pos:])
    return "".join(out), len(text)


def plain(text: str) -> str:
    return render_codes(text)[0]


def units_from_pod(source: str) -> list[Unit]:
    out = UnitBuilder()
    in_pod = False  # text before the first command and after "=cut" is not POD
    skipping: str | None = None  # the "=begin FORMAT" block being skipped
    prefix = ""  # a bullet or number of an item, written before its paragraph
    bare_item = False  # a named item has no paragraph yet: a following item joins its unit
    for block in paragraphs(source):
        body = block.rstrip()
        command = re.match(r"=([a-zA-Z]\w*)\s*(.*)", body, re.S)
        if skipping is not None:
            if command and command[1] == "end" and command[2].split()[:1] == [skipping]:
                skipping = None
            continue
        if command:
            in_pod = command[1] != "cut"
        if not in_pod or not body:
            continue
        verbatim = body[:1] in " \t"
        if command:
            name, arg = command[1], " ".join(command[2].split())
            if name in HEADING_LEVEL:
                bare_item = False
                out.separate()
                out.heading(HEADING_LEVEL[name], plain(arg).strip() + "\n")
            elif name == "item":
                label = plain(arg).strip()
                named = not re.match(r"(?:[*o•-]|\d+\.?)(?:\s|$)", label)  # not a bullet or a number
                if named and bare_item:  # "=item open FH,EXPR" right after "=item open FH": one entry
                    out.heading(None, label + "\n")
                    continue
                out.separate()
                if named:
                    out.heading(1, label + "\n")
                elif " " in label:  # "=item * some text": a paragraph of its own
                    out.boundary(2)
                    out.add(label + "\n")
                else:  # a bare bullet or number is written before the item's first paragraph
                    out.boundary(2)
                    prefix = label + " "
                bare_item = named
                continue
            elif name == "begin":
                skipping = arg.split()[0] if arg else ""
            # =pod, =cut, =over, =back, =encoding, =for (a one-paragraph block): nothing to print
            continue
        bare_item = False
        out.separate()
        out.boundary(2)
        out.add(block if verbatim else prefix + plain(body) + "\n")  # verbatim text is printed as it is
        prefix = ""
    return out.finish()


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    for path in sorted((root / POD_DIR).glob("*.pod")):
        if path.name in EXCLUDED:
            continue
        source = read_source_text(path)
        if source is not None and (doc := document(root, path, units_from_pod(source))):
            yield doc


SOURCES = [
    Source(
        name="perl-pod",
        category="programming-docs",
        license="GPL-1.0-or-later OR Artistic-1.0-Perl",
        level_names=("=head1 section", "=head2 subsection / named =item", "paragraph"),
        packages=(
            PackageSpec(
                "deb", "perl-doc", "5.36.0-7+deb12u4",
                sha256="f4269cff4576d6f02a6756df842988e58451c7e945b08517dd235531b24e48f8",
                filename="perl-doc_5.36.0-7+deb12u4_all.deb",
            ),
        ),
        parse=parse,
    )
]
