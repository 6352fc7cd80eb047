"""English dialog corpus of ChatterBot, from the PyPI wheel ``chatterbot-corpus`` (BSD-3-Clause).

Each ``chatterbot_corpus/data/english/*.yml`` file is a topic: ``categories`` (topic names) and
``conversations`` (lists of turns, alternating speakers). The YAML is rendered as plain text::

    Topic: greetings
    <blank>
    - Hello
    - Hi
    <blank>
    - How are you doing?
    - Fine, and you?

(continuation lines of a multi-line turn, e.g. a code sample, are indented by two spaces). One raw
document per topic file:

* coarse: the topic file starts (the header line is part of the first unit);
* middle: a conversation starts;
* fine: a turn starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, Unit, clean_units, read_source_text, skip

ENGLISH = Path("chatterbot_corpus/data/english")


def render_turn(turn: str) -> str:
    """"- first line\\n" then "  next line\\n" ...; blank lines inside a turn stay empty."""
    lines = turn.strip("\n").rstrip().split("\n")
    return "- " + "\n".join([lines[0]] + [f"  {line}" if line.strip() else "" for line in lines[1:]]) + "\n"


def topic_units(data: object, fallback_topic: str) -> list[Unit]:
    """Units of one topic file's parsed YAML; [] when it holds no usable conversation."""
    if not isinstance(data, dict) or not isinstance(data.get("conversations"), list):
        return []
    categories = [str(c) for c in data.get("categories") or [] if c is not None]
    header = f"Topic: {', '.join(categories) or fallback_topic}\n\n"
    units: list[Unit] = []
    for conversation in data["conversations"]:
        if not isinstance(conversation, list):
            continue  # a malformed conversation (a bare string or mapping): leave it out
        turns = [t for t in conversation if isinstance(t, (str, int, float)) and str(t).strip()]
        if not turns:
            continue
        if units:  # a blank line between conversations
            units[-1] = Unit(units[-1].text + "\n", units[-1].level)
        units.extend(Unit(render_turn(str(t)), 1 if i == 0 else 2) for i, t in enumerate(turns))
    if units:
        units[0] = Unit(header + units[0].text, 0)
    return clean_units(units)


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    for path in sorted((root / ENGLISH).glob("*.yml")):
        text = read_source_text(path)
        if text is None:
            continue
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            skip(path, "invalid YAML")
            continue
        units = topic_units(data, path.stem.replace("_", " "))
        if not units:
            skip(path, "no conversations")
            continue
        rel = str(path.relative_to(root))
        yield RawDocument(doc_id=f"english/{path.stem}", file=rel, units=units)


SOURCES = [
    Source(
        name="chatterbot",
        category="conversation",
        license="BSD-3-Clause",
        level_names=("topic file", "conversation", "turn"),
        packages=(
            PackageSpec(
                "pypi",
                "chatterbot-corpus",
                "1.3.3",
                sha256="86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
                filename="chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
            ),
        ),
        parse=parse,
        notes="English files only (21 topics). Rendered from the parsed YAML, not copied: a 'Topic:' header, "
        "'- ' before each turn, a blank line between conversations. The wheel's metadata says 'BSD License' "
        "(upstream LICENSE: BSD-3-Clause); the data is user contributed.",
    )
]
