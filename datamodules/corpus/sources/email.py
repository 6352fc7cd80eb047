"""E-mail messages: the test messages of the Python standard library (``test/test_email/data/msg_*.txt``).

License: PSF-2.0 (part of CPython). Each file is parsed with the stdlib ``email`` package and
rendered as plain text: its header block, then its body; a multipart message shows each part
(its own headers, then its text; a non-text part becomes a one-line placeholder such as
"[image/gif attachment: fish.gif]"). One raw document per file. Levels:

* coarse: a message starts (the file's, and each one nested in a message/rfc822 part or a digest);
* middle: a header block, a body, or a MIME part starts;
* fine: a group of related header lines (transport, then addressing, then MIME headers; each
  group keeps the message's order) or a body paragraph.
"""

from __future__ import annotations

import email
import email.policy
import html
import platform
import re
import sysconfig
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

from datamodules.corpus.schema import PackageSpec, RawDocument, Source, skip
from datamodules.corpus.sources.text_blocks import UnitBuilder, document, paragraphs

DATA_DIR = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
GROUP_ORDER = ("transport", "addressing", "mime")  # header groups, in the order they are written
ADDRESSING = {
    "from", "to", "cc", "bcc", "subject", "date", "reply-to", "sender", "message-id", "in-reply-to", "references",
}


def _group(name: str) -> str:
    """Which group of related header lines a header belongs to."""
    name = name.lower()
    if name in ADDRESSING:
        return "addressing"
    return "mime" if name.startswith("content-") or name == "mime-version" else "transport"


def _header_value(value: object) -> str:
    try:
        return " ".join(str(value).split())  # decoded and unfolded
    except Exception:  # a malformed header the parser kept raw: show it as it came
        return " ".join(getattr(value, "_raw", repr(value)).split())


def write_headers(msg: Message, out: UnitBuilder, level: int) -> bool:
    """Header lines by group, transport / addressing / MIME (the first group opens a unit of ``level``).

    Returns False when there are no headers."""
    items = list(msg.items())
    first = True
    for group in GROUP_ORDER:
        lines = [f"{name}: {_header_value(value)}\n" for name, value in items if _group(name) == group]
        if lines:
            out.boundary(level if first else 2)
            out.add("".join(lines))
            first = False
    if items:
        out.add("\n")  # the blank line that ends a header block
    return bool(items)


def _text_of(part: Message) -> str:
    """A text part's decoded text (tags stripped from HTML)."""
    if part.get_content_maintype() == "multipart":  # a broken multipart (its boundary not found)
        return str(part.get_payload())  # its raw text
    data = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset)
    except (LookupError, UnicodeDecodeError):
        text = data.decode("utf-8", errors="replace")
    if part.get_content_subtype() == "html":  # approximate: drop tags and decode entities
        text = html.unescape(re.sub(r"<[^>]*>", "", text))
    return text.replace("\r\n", "\n")


def write_body(part: Message, out: UnitBuilder, level: int) -> None:
    """The body of a message or part; its first unit opens at ``level``."""
    if part.is_multipart():  # MIME parts, or the message inside a message/rfc822 part
        encapsulated = part.get_content_type() in ("message/rfc822", "message/global")
        for sub in part.get_payload():
            if encapsulated:
                write_message(sub, out)
            else:
                write_part(sub, out)
        return
    maintype = part.get_content_maintype()
    if maintype not in ("text", "multipart"):
        name = part.get_filename()
        out.boundary(level)
        out.add(f"[{part.get_content_type()} attachment{': ' + name if name else ''}]\n\n")
        return
    text = _text_of(part).strip("\n")
    for i, block in enumerate(paragraphs(text + "\n\n") if text.strip() else []):
        out.boundary(level if i == 0 else 2)
        out.add(block)


def write_part(part: Message, out: UnitBuilder) -> None:
    """A MIME part: its headers and body, opening a middle unit."""
    had_headers = write_headers(part, out, 1)
    write_body(part, out, 2 if had_headers else 1)


def write_message(msg: Message, out: UnitBuilder) -> None:
    """A whole message: a coarse unit opens at its headers (or at its body when it has none)."""
    had_headers = write_headers(msg, out, 0)
    write_body(msg, out, 1 if had_headers else 0)


def parse(roots: list[Path]) -> Iterator[RawDocument]:
    root = roots[0]
    for path in sorted(root.glob("msg_*.txt")):
        data = path.read_bytes()
        if not data.strip():
            skip(path, "empty file")
            continue
        msg = email.message_from_bytes(data, policy=email.policy.default)
        if not msg.keys():
            skip(path, "no headers (not an e-mail message)")
            continue
        out = UnitBuilder()
        write_message(msg, out)
        if doc := document(root, path, out.finish()):
            yield doc


SOURCES = [
    Source(
        name="python-test-email",
        category="email",
        license="PSF-2.0",
        level_names=("message", "header block / body / MIME part", "header group / paragraph"),
        packages=(
            PackageSpec("local", "python-stdlib-test-email", platform.python_version(), filename=str(DATA_DIR)),
        ),
        parse=parse,
    )
]
