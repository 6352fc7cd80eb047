"""Academic papers: the Sweave/LaTeX vignettes of R packages (Debian ``r-cran-*``), most of them journal articles.

The packages below install their vignettes' sources as ``usr/lib/R/site-library/<package>/doc/*.Rnw``:
papers from the Journal of Statistical Software and R News (sandwich, zoo, strucchange, lme4, pscl,
vcd, coin, party, partykit, ...), with a title, an abstract, numbered sections, equations, citations and
R code. License: each package's (GPL-2 or GPL-3 mostly). One raw document per vignette:

* coarse: the paper starts (title and abstract) or a ``\\section`` starts;
* middle: a ``\\subsection`` starts;
* fine: a ``\\subsubsection`` / ``\\paragraph`` starts, or a paragraph (blank-line separated in the source;
  a displayed code chunk is a paragraph of its own; a list continues its paragraph, one line per item).

A heading directly above a deeper one (``\\section`` then ``\\subsection``, no text between) shares its
unit, at the coarser level: a title alone is no segment.

The LaTeX is reduced to the text a reader sees, except mathematics, which is kept as its LaTeX source
(``$\\hat\\theta$``), as papers are often read and quoted: the preamble, comments, floats (figures and
tables), tabulars, the bibliography and hidden code chunks (``echo=FALSE``) go; shown code chunks and
verbatim blocks stay as they are; the document's own ``\\newcommand`` macros are expanded; sections are
numbered as LaTeX numbers them (``2.1. Model frame``, appendix ``A.``; deeper headings unnumbered), and ``\\ref`` / ``\\eqref`` print
the section, equation, figure or table number; citations print their keys (``(Zeileis:2006)``); text
commands (``\\code{x}``, ``\\pkg{x}``, ``\\emph{x}``) print their argument, ``\\footnote{x}`` prints
`` (x)``, quotes and dashes print as characters. ``\\Sexpr{}`` (a value computed when the paper is
built) prints nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from datamodules.corpus.latex_text import (
    COMPUTED,
    HEADING_MARK,
    TWO_ARGUMENTS,
    braced,
    collect_macros,
    drop_environments,
    expand_macros,
    mark_headings,
    number_labels,
    protect_code,
    protect_lines,
    protect_math,
    remove_command,
    render_inline,
    render_lists,
    restore_held,
    tidy_block,
)
from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, read_source_text, skip
from datamodules.corpus.sources.text_blocks import UnitBuilder, document

SITE_LIBRARY = Path("usr/lib/R/site-library")


def render_vignette(source: str) -> list[Unit] | None:
    """Units of one vignette, or None when it has no ``\\begin{document}``."""
    held: list[str] = []
    text = protect_lines(source, held)
    macros, text = collect_macros(text)
    begin = text.find("\\begin{document}")
    if begin < 0:
        return None
    preamble, body = text[:begin], text[begin + len("\\begin{document}") :]
    body = body.split("\\end{document}")[0]
    body = re.split(r"\\bibliography\s*\{|\\begin\{thebibliography\}|\\printbibliography", body)[0]
    body = remove_command(expand_macros(body, macros), "Sexpr", COMPUTED)
    title = None
    if m := re.search(r"\\title\s*(?:\[[^\]]*\])?", preamble):
        title = braced(preamble, m.end())
    elif m := re.search(r"\\title\s*(?:\[[^\]]*\])?", body):  # article class: the title is set in the body
        title = braced(body, m.end())
        if title:
            body = body[: m.start()] + body[title[1] :]
    abstract_text = ""
    if m := re.search(r"\\Abstract\s*", preamble):
        group = braced(preamble, m.end())
        abstract_text = group[0] if group else ""
    if m := re.search(r"\\begin\{abstract\}(.*?)\\end\{abstract\}", body, re.S):
        abstract_text, body = m[1], body[: m.start()] + body[m.end() :]
    labels = number_labels(body)
    front = ""
    if title:
        front += f"\n\n{HEADING_MARK}0{' '.join(expand_macros(title[0], macros).split())}\n\n"
    if abstract_text.strip():
        front += f"Abstract\n{expand_macros(abstract_text, macros).strip()}\n\n"  # the label opens its paragraph
    text = TWO_ARGUMENTS.sub("", front + body)
    text = protect_code(text, held)
    text = protect_math(text, held)
    text = drop_environments(text)
    text = re.sub(r"\\(?:begin|end)\{(?!itemize|enumerate|description|appendix)[a-zA-Z*]+\}(?:\{[^{}]*\})?", "\n", text)
    text = mark_headings(text)
    text = render_lists(text)
    text = render_inline(text, labels).replace(COMPUTED, "")
    out = UnitBuilder()
    bare_level = -1  # level of a heading with no text under it yet (-1: none): a deeper heading right below joins it
    for block in re.split(r"\n[ \t]*\n|(?=" + HEADING_MARK + ")", text):
        tidy = tidy_block(block)
        if not tidy:
            continue
        if tidy.startswith(HEADING_MARK):
            first, _, rest = tidy.partition("\n")
            level = int(first[1])
            out.heading(None if 0 <= bare_level < level else level, restore_held(first[2:], held) + "\n\n")
            bare_level = -1 if rest else level
            if rest:
                out.add(restore_held(rest, held).rstrip("\n") + "\n\n")
            continue
        if bare_level < 0:
            out.boundary(2)
        bare_level = -1
        out.add(restore_held(tidy, held).rstrip("\n") + "\n\n")
    units = out.finish()
    if units:
        units[-1] = Unit(units[-1].text.rstrip("\n") + "\n", units[-1].level)
    return units


def vignette_files(root: Path) -> list[Path]:
    return sorted(root.glob(f"{SITE_LIBRARY}/*/doc/*.Rnw"))


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    for root in roots:
        found = vignette_files(root)
        if not found:
            skip(root, "no vignette sources")
        for path in found:
            source = read_source_text(path)
            if source is None:
                continue
            units = render_vignette(source)
            if units is None:
                skip(path, "no document body")
                continue
            doc_id = f"{path.parent.parent.name}/{path.stem}"
            if doc := document(root, path, units, doc_id=doc_id):
                yield doc


def deb(name: str, version: str, sha256: str, arch: str = "amd64") -> PackageSpec:
    return PackageSpec("deb", name, version, sha256=sha256, filename=f"{name}_{version.replace(':', '%3a')}_{arch}.deb")


PACKAGES = (
    deb("r-cran-sandwich", "3.0-2-1", "a90e7d3c69c70a6d73e4bc63d1f20eae3b4a73866d5266246dd5b3d980c60d79", "all"),
    deb("r-cran-zoo", "1.8-11-1", "81f27bbee835d9d44d2a410211c813d2da6c2d71f1e37d71b019ab259e182b9b"),
    deb("r-cran-strucchange", "1.5-3-1", "0be3f44609be4e90be3f295880dbcaebf57e5a918b68eb11f18c0900b2a4874d"),
    deb("r-cran-lmtest", "0.9.40-1", "ce2a709e7bb917f2b435314038e69ac8d32d71426f91c01b0332cb39b5020bf7"),
    deb("r-cran-lme4", "1.1-31-1", "232c90c0504309ee64749af8ca8359e999a00e6dc0c1abf697640f1c16ecb4aa"),
    deb("r-cran-pscl", "1.5.5-1+b1", "646b2c6c04fc385f50efe9709f0ef64302fe7e07bb1953e424fb65e8bb43ac47"),
    deb("r-cran-vcd", "1:1.4-11-1", "959639853b06a9056b4494e145bf84394a329805645e80c4384091323b6c6ae4", "all"),
    deb("r-cran-coin", "1.4-2-1+b1", "391bda13701acba6329f821cfde3571827bd7a4cff91b66511945f1c9e7fa9aa"),
    deb("r-cran-party", "1.3-11-1", "ecca5564178b27b54228a5edace4d2b42493bc8635b251826cee4bd5bd1b7457"),
    deb("r-cran-partykit", "1.2-16-1", "3487ae4f0bf77552f1c3f29323884d43c6a8e1038e63ca38c2be5ed713a5167a"),
    deb("r-cran-mvtnorm", "1.1-3-1+b1", "12e5917f2e9514ba842315c9fa3fabfe6beed91b2113e5cbee3b2eba7e4cab7d"),
    deb("r-cran-aer", "1.2-10-1", "c75319e132fbb7e3d002ef6c2933507046c66877bea8d5029e599757ae36c709", "all"),
)

SOURCES = [
    Source(
        name="r-vignettes",
        category="academic",
        license="GPL-2.0-or-later / GPL-3.0 (each package's)",
        level_names=("paper / section", "subsection", "paragraph"),
        packages=PACKAGES,
        parse=parse,
        notes="RawDocument = one Sweave vignette (most are Journal of Statistical Software or R News papers). "
        "Mathematics kept as LaTeX source; other markup reduced to the printed text.",
    )
]
