"""Pack a source's raw documents into corpus documents of ``min_tokens``-``max_tokens`` tokens.

Short raw documents are concatenated (each one's start becomes a coarse boundary); long ones are
windowed. A document is only ever cut *between* finest units, preferring the coarsest boundary
near a per-document target length drawn log-uniformly, so lengths spread over the allowed range.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from datamodules.corpus.schema import LEVELS, RawDocument, Unit, clean_units

SPLITS = ("train", "validation", "test")


def split_of(source: str, doc_id: str, fractions: tuple[float, float, float], seed: int) -> str:
    """Deterministic split of a source document: every window of it lands in the same split."""
    u = int(hashlib.sha256(f"{seed}:{source}:{doc_id}".encode()).hexdigest()[:12], 16) / 16**12
    return SPLITS[0] if u < fractions[0] else SPLITS[1] if u < fractions[0] + fractions[1] else SPLITS[2]


@dataclass
class PackedUnit:
    unit: Unit
    tokens: int
    file: str


@dataclass
class PackedDocument:
    units: list[PackedUnit]

    @property
    def text(self) -> str:
        return "".join(p.unit.text for p in self.units)

    def boundaries(self) -> dict[str, list[int]]:
        """Per level, the character offsets (after 0) where a segment of that level starts."""
        out: dict[str, list[int]] = {name: [] for name in LEVELS}
        offset = 0
        for i, p in enumerate(self.units):
            if i > 0:
                for level, name in enumerate(LEVELS):
                    if p.unit.level <= level:
                        out[name].append(offset)
            offset += len(p.unit.text)
        return out

    def segment_tokens(self) -> dict[str, list[int]]:
        """Per level, the token count of each segment (sums of unit counts)."""
        out: dict[str, list[int]] = {}
        for level, name in enumerate(LEVELS):
            sizes: list[int] = []
            for i, p in enumerate(self.units):
                if i == 0 or p.unit.level <= level:
                    sizes.append(0)
                sizes[-1] += p.tokens
            out[name] = sizes
        return out


def _best_cut(buffer: list[PackedUnit], target: int, min_tokens: int, max_tokens: int) -> int | None:
    """Index of the unit to start the next document at: the coarsest boundary near ``target``."""
    best, best_score, prefix = None, math.inf, 0
    for i, p in enumerate(buffer):
        if i > 0 and min_tokens <= prefix <= max_tokens:
            score = p.unit.level * max_tokens + abs(prefix - target)  # level first, then closeness
            if score < best_score:
                best, best_score = i, score
        prefix += p.tokens
        if prefix > max_tokens:
            break
    return best


def pack_documents(
    raw_docs: Iterable[tuple[RawDocument, list[int]]],
    min_tokens: int,
    max_tokens: int,
    rng: random.Random,
    skipped: Counter,
) -> Iterator[PackedDocument]:
    """Stream ``(raw document, token count per unit)`` into packed documents.

    ``skipped`` counts what could not be used: units over ``max_tokens`` and the leftover shorter
    than ``min_tokens`` at the end of the stream.
    """
    upper = min(max_tokens, 4 * min_tokens)  # targets are drawn from [min, upper]; max is a hard cap

    def draw_target() -> int:
        return int(math.exp(rng.uniform(math.log(min_tokens), math.log(upper))))

    buffer: list[PackedUnit] = []
    total, target = 0, draw_target()

    def emit(cut: int) -> PackedDocument:
        nonlocal buffer, total, target
        head, buffer = buffer[:cut], buffer[cut:]
        head[0] = PackedUnit(Unit(head[0].unit.text, 0), head[0].tokens, head[0].file)  # a document opens coarse
        total = sum(p.tokens for p in buffer)
        target = draw_target()
        return PackedDocument(head)

    for raw, counts in raw_docs:
        for unit, n in zip(clean_units(raw.units), counts):
            if n > max_tokens:  # one finest unit too long for any document: it cannot be used
                skipped[f"unit over {max_tokens} tokens"] += 1
                if total >= min_tokens:
                    yield emit(len(buffer))
                buffer, total = [], 0
                continue
            buffer.append(PackedUnit(unit, n, raw.file))
            total += n
            while total >= target * 1.5 or total > max_tokens:
                cut = _best_cut(buffer, target, min_tokens, max_tokens)
                if cut is None:  # no boundary in range (e.g. one huge unit ends the buffer)
                    cut = len(buffer) - 1 if total > max_tokens else len(buffer)
                    if sum(p.tokens for p in buffer[:cut]) < min_tokens:
                        skipped["no boundary within the length range"] += 1
                        buffer, total = buffer[cut:], sum(p.tokens for p in buffer[cut:])
                        break
                yield emit(cut)
    while total >= min_tokens:
        if total <= max_tokens:
            yield emit(len(buffer))
            break
        cut = _best_cut(buffer, target, min_tokens, max_tokens)
        if cut is None:
            break
        yield emit(cut)
    if buffer and total < min_tokens:
        skipped[f"leftover under {min_tokens} tokens"] += 1
