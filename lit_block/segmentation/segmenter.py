"""One interface for every segmentation method: text -> blocks, with the same granularity knobs.

    seg = Segmenter("segmenter", checkpoint="checkpoints/segmenter/segmenter.ckpt")
    blocks = seg.segment(text, granularity="middle", max_block_tokens=512)
    blocks = Segmenter("regex").segment(text, granularity=256)   # ~256-token blocks

``granularity`` is a level (``coarse``, ``middle``, ``fine``) or a target block size in tokens.
The trained segmenter cuts where its level-conditioned boundary probability passes ``threshold``;
size-driven methods use the level's default size (``LEVEL_TOKENS``). With a numeric granularity
every method aims at that average size. Block sizes are counted in the tokenizer's tokens (default:
the embedded teacher's, since block attention consumes the blocks).
"""

from __future__ import annotations

from functools import cached_property

from lit_block.errors import UsageError, check_number
from lit_block.segmentation import baselines
from lit_block.segmentation.document import Block, SegmentableText, load_tokenizer
from lit_block.segmentation.planner import (BlockLimits, avoid_mid_sentence, close_at_separators, demote_after_headings,
                                            favour_line_starts, plan_blocks, wrapped_line_share)

METHODS = ("segmenter", "fixed", "regex", "sentence", "texttiling", "semantic")
LEVELS = ("coarse", "middle", "fine")
LEVEL_TOKENS = {"coarse": 1024, "middle": 256, "fine": 64}  # default sizes for size-driven methods
COARSE_SCORING = ("topic-shift", "head")  # the trained segmenter's coarse scores (lit_block.segmentation.model)
# close (default): a separator line ends the block before it (planner.close_at_separators); free: the scores decide
SEPARATOR_UNITS = ("close", "free")
SEPARATOR_UNITS_HELP = ("the trained segmenter at a separator line (%, ---, ***: no letter or digit): close = the line "
                        "ends the block before it, free = its scores decide")
# a prior over kinds of units, chosen by the rule registered in docs/results/segmenter_kind_prior_2026-12-07.md: at the
# fine level, units inside a line get 0.25 x their probability (planner.favour_line_starts), and at every level units
# starting a line that carries on a sentence get 0 x theirs (planner.avoid_mid_sentence): line starts first, then
# sentence starts inside a line, then wrapped lines (text whose fine blocks are its physical lines: set both to 1)
FINE_INLINE_WEIGHT = 0.25
FINE_INLINE_WEIGHT_HELP = ("the trained segmenter's fine level: multiply the probabilities of units inside a line (not "
                           "at a line start) by this, in [0, 1]")
# the fine level of a document whose lines are not hard-wrapped (fewer than UNWRAPPED_LINE_SHARE of its line starts
# carry on a sentence: planner.wrapped_line_share; verses, dialogue turns, a paragraph a line): units inside a line get
# this weight instead, so every line start ranks first there, each kind in the head's order (0.02 did not reorder
# them: docs/results/segmenter_unwrapped_prior_2026-12-07.md, segmenter_line_order_prior_2026-12-07.md)
UNWRAPPED_LINE_SHARE = 0.10
FINE_INLINE_WEIGHT_UNWRAPPED = 1e-6
FINE_INLINE_WEIGHT_UNWRAPPED_HELP = ("the trained segmenter's fine level in a document whose lines are not hard-wrapped "
                                     f"(under {UNWRAPPED_LINE_SHARE:.0%} of its line starts carry on a sentence): the "
                                     "--fine-inline-weight there, in [0, 1]")
# the same documents' fine level: units right after a heading-like line (planner.heading_like) get this weight, so a
# heading opens the block of the text under it (None: off; docs/results/segmenter_after_heading_prior_2026-12-08.md)
FINE_AFTER_HEADING_WEIGHT_UNWRAPPED = None
FINE_AFTER_HEADING_WEIGHT_UNWRAPPED_HELP = ("the trained segmenter's fine level in a document whose lines are not "
                                            "hard-wrapped: multiply the probabilities of units right after a short "
                                            "unpunctuated line (a heading) by this, in [0, 1]; unset: off")
MID_SENTENCE_WEIGHT = 0.0
MID_SENTENCE_WEIGHT_HELP = ("the trained segmenter, every level: multiply the probabilities of units that start a line "
                            "carrying on the previous line's sentence (hard-wrapped prose) by this, in [0, 1]")
ENCODER_DTYPES = ("auto", "float32", "bfloat16")  # the frozen encoder's (lit_block.segmentation.packed_bert.encoder_dtype_of)
ENCODER_DTYPE_HELP = ("the segmenter's frozen encoder: auto (bfloat16 on a CPU with AMX or AVX-512 bf16, measured "
                      "faster with the same blocks; float32 elsewhere), float32 or bfloat16")


INFERENCE_OPTIONS = ("encoder_dtype", "separator_units", "fine_inline_weight", "fine_inline_weight_unwrapped",
                     "fine_after_heading_weight_unwrapped", "mid_sentence_weight")


def add_inference_options(parser) -> None:
    """The trained segmenter's inference options (``INFERENCE_OPTIONS``), as `segment` and `eval-seg` take them."""
    parser.add_argument("--encoder-dtype", default="auto", choices=ENCODER_DTYPES, help=ENCODER_DTYPE_HELP)
    parser.add_argument("--separator-units", default=SEPARATOR_UNITS[0], choices=SEPARATOR_UNITS,
                        help=SEPARATOR_UNITS_HELP)
    parser.add_argument("--fine-inline-weight", type=float, default=FINE_INLINE_WEIGHT, help=FINE_INLINE_WEIGHT_HELP)
    parser.add_argument("--fine-inline-weight-unwrapped", type=float, default=FINE_INLINE_WEIGHT_UNWRAPPED,
                        help=FINE_INLINE_WEIGHT_UNWRAPPED_HELP)
    parser.add_argument("--fine-after-heading-weight-unwrapped", type=float,
                        default=FINE_AFTER_HEADING_WEIGHT_UNWRAPPED, help=FINE_AFTER_HEADING_WEIGHT_UNWRAPPED_HELP)
    parser.add_argument("--mid-sentence-weight", type=float, default=MID_SENTENCE_WEIGHT, help=MID_SENTENCE_WEIGHT_HELP)


def inference_options(args) -> dict:
    """``Segmenter`` keyword arguments from parsed ``add_inference_options`` options."""
    return {name: getattr(args, name) for name in INFERENCE_OPTIONS}


def check_encoder_dtype(name: str) -> str:
    if name not in ENCODER_DTYPES:
        raise UsageError(f"encoder dtype must be one of {', '.join(ENCODER_DTYPES)}, got {name!r}")
    return name


def parse_granularity(value: str | int) -> str | int:
    """``coarse`` / ``middle`` / ``fine`` or a positive token count."""
    if isinstance(value, int) or str(value).isdigit():
        n = int(value)
        if n <= 0:
            raise UsageError(f"granularity must be a level or a positive token count, got {value}")
        return n
    if value not in LEVELS:
        raise UsageError(f"granularity must be one of {', '.join(LEVELS)} or a token count, got {value!r}")
    return value


class Segmenter:
    def __init__(self, method: str = "segmenter", checkpoint: str | None = None, tokenizer: str = "smollm2-135m",
                 splitter: str = "sentences", semantic_encoder: str = "all-minilm-l6-v2", encoder: str | None = None,
                 coarse_scoring: str | None = None, encoder_dtype: str = "auto", separator_units: str = "close",
                 fine_inline_weight: float = FINE_INLINE_WEIGHT, mid_sentence_weight: float = MID_SENTENCE_WEIGHT,
                 fine_inline_weight_unwrapped: float | None = FINE_INLINE_WEIGHT_UNWRAPPED,
                 fine_after_heading_weight_unwrapped: float | None = FINE_AFTER_HEADING_WEIGHT_UNWRAPPED):
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if method == "segmenter" and not checkpoint:
            raise UsageError("the segmenter method needs --checkpoint (train one: lit-block fit --config experiments/segmenter/segmenter.yaml; README, 'Recipes')")
        self.method, self.checkpoint, self.splitter = method, checkpoint, splitter
        self.tokenizer_name, self.semantic_encoder = tokenizer, semantic_encoder
        self.encoder = encoder  # overrides the segmenter checkpoint's encoder location
        self.coarse_scoring = coarse_scoring  # overrides the checkpoint's coarse rule (lit_block.segmentation.model)
        if separator_units not in SEPARATOR_UNITS:
            raise UsageError(f"separator units must be one of {', '.join(SEPARATOR_UNITS)}, got {separator_units!r}")
        self.separator_units = separator_units  # the trained segmenter's; baselines place their own cuts
        # the trained segmenter's fine level: units inside a line get their probability times this (1: the head's own)
        check_number("fine_inline_weight", fine_inline_weight, low=0, high=1)
        self.fine_inline_weight = fine_inline_weight
        if fine_inline_weight_unwrapped is not None:
            check_number("fine_inline_weight_unwrapped", fine_inline_weight_unwrapped, low=0, high=1)
        self.fine_inline_weight_unwrapped = fine_inline_weight_unwrapped
        if fine_after_heading_weight_unwrapped is not None:
            check_number("fine_after_heading_weight_unwrapped", fine_after_heading_weight_unwrapped, low=0, high=1)
        self.fine_after_heading_weight_unwrapped = fine_after_heading_weight_unwrapped
        check_number("mid_sentence_weight", mid_sentence_weight, low=0, high=1)
        self.mid_sentence_weight = mid_sentence_weight  # every level: see planner.avoid_mid_sentence
        # the segmenter's encoder at inference: auto = bfloat16 where the CPU has bfloat16 matrix instructions
        self.encoder_dtype = check_encoder_dtype(encoder_dtype)
        self._doc, self._memo = None, {}  # per-document work reused across levels and sizes

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.tokenizer_name)

    @cached_property
    def module(self):
        from pathlib import Path

        from lit_block.segmentation.model import SegmenterNet

        if not Path(self.checkpoint).is_file():
            raise FileNotFoundError(f"segmenter checkpoint not found: {self.checkpoint}")
        return SegmenterNet.from_checkpoint(self.checkpoint, encoder=self.encoder, coarse_scoring=self.coarse_scoring,
                                            encoder_dtype=self.encoder_dtype)

    @cached_property
    def _embedder(self):
        from lit_block.segmentation.model import UnitEncoder

        return UnitEncoder(self.semantic_encoder, layers=6, max_unit_tokens=64)

    def prepare(self, text: str) -> SegmentableText:
        return SegmentableText(text, self.tokenizer, self.splitter)

    def scores(self, doc: SegmentableText, level: str, target: float) -> dict[int, float]:
        """Boundary scores on token positions: probabilities (segmenter) or method-specific scores."""
        if doc is not self._doc:
            self._doc, self._memo = doc, {}
        if self.method == "segmenter":
            units = doc.candidate_chars
            if "features" not in self._memo:  # encode the units once (one tokenization), score levels with the head
                spans = list(zip(units, units[1:] + [len(doc.text)]))
                self._memo["texts"] = texts = [doc.text[a:b] for a, b in spans]
                self._memo["tokens"] = [doc.token_index(c) for c in units]  # each unit's first token
                self._memo["features"] = self.module.unit_features(texts, doc.text, spans) if texts else None
            if self._memo["features"] is None:
                return {}
            probs = self.module.boundary_probabilities(self._memo["features"], LEVELS.index(level)).tolist()
            if self.separator_units == "close":
                probs = close_at_separators(self._memo["texts"], probs)
            if level == "fine" and (weight := self._fine_inline_weight()) != 1:
                probs = favour_line_starts(self._memo["texts"], probs, weight)
            heading_weight = self.fine_after_heading_weight_unwrapped
            if level == "fine" and heading_weight is not None and self._unwrapped():
                probs = demote_after_headings(self._memo["texts"], probs, heading_weight)
            if self.mid_sentence_weight != 1:
                probs = avoid_mid_sentence(self._memo["texts"], probs, self.mid_sentence_weight)
            return {t: float(p) for t, p in zip(self._memo["tokens"][1:], probs[1:])
                    if p is not None and 0 < t < doc.n_tokens}
        if self.method in ("semantic", "texttiling"):  # size-independent scores: computed once per document
            if "scores" not in self._memo:
                self._memo["scores"] = (baselines.semantic_scores(doc, target, self._embedder) if self.method == "semantic"
                                        else baselines.texttiling_scores(doc, target))
            return self._memo["scores"]
        return getattr(baselines, f"{self.method}_scores")(doc, target)

    def _fine_inline_weight(self) -> float:
        """The fine level's weight for units inside a line, in the memoised document."""
        if self.fine_inline_weight_unwrapped is None:
            return self.fine_inline_weight
        return self.fine_inline_weight_unwrapped if self._unwrapped() else self.fine_inline_weight

    def _unwrapped(self) -> bool:
        """Whether the memoised document's lines are not hard-wrapped (``planner.wrapped_line_share``)."""
        if "wrapped" not in self._memo:
            self._memo["wrapped"] = wrapped_line_share(self._memo["texts"])
        return self._memo["wrapped"] < UNWRAPPED_LINE_SHARE

    def cut(self, doc: SegmentableText, granularity: str | int, threshold: float = 0.5,
            limits: BlockLimits = BlockLimits(), target_tokens: float | None = None) -> list[int]:
        """Block starts (token positions) for a prepared document."""
        check_number("threshold", threshold, low=0, high=1)  # a probability: nan or 2 would cut nowhere, silently
        granularity = parse_granularity(granularity)
        level = granularity if isinstance(granularity, str) else "middle"
        if isinstance(granularity, int):
            target_tokens = granularity
        size = target_tokens or LEVEL_TOKENS[level]
        scores = self.scores(doc, level, size)
        if self.method in ("fixed", "regex", "sentence"):  # these place their own cuts for the size
            return plan_blocks(doc.n_tokens, scores, limits, threshold=0.5)
        if self.method == "segmenter" and target_tokens is None:
            return plan_blocks(doc.n_tokens, scores, limits, threshold=threshold)
        return plan_blocks(doc.n_tokens, scores, limits, target_tokens=size)

    def segment(self, text: str, granularity: str | int = "middle", threshold: float = 0.5,
                min_block_tokens: int = 0, max_block_tokens: int | None = None, max_depth: int = 8) -> list[Block]:
        """Blocks that cover ``text`` exactly, in order."""
        check_number("max_depth", max_depth, low=0, integer=True)
        check_number("threshold", threshold, low=0, high=1)  # bad options fail before any model loads
        parse_granularity(granularity)
        if self.method == "segmenter" and len(text) >= SegmentableText.BACKGROUND_CHARS:
            self.module.encoder.start_tokenizing(text)  # the encoder's tokenizer works while the text is prepared
        doc = self.prepare(text)
        cuts = self.cut(doc, granularity, threshold, BlockLimits(min_block_tokens, max_block_tokens, max_depth))
        return doc.blocks(cuts)
