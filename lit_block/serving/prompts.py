"""A request's text -> context blocks and a query: the chat template, documents, and long documents cut.

    builder = PromptBuilder(tokenizer, cutter=DocumentCutter("sentence", "middle", tokenizer_path="exports/student"))
    blocks, query = builder.chat([{"role": "user", "content": "Who ...?"}], documents=["passage one", ...])
    result = generate(model, blocks, query, GenerationConfig(stop_token_ids=builder.stop_token_ids))

Chat: the conversation is rendered with the model's chat template (generation prompt added). With
documents, everything before the last user message's content -- system prompt, earlier turns, the
user header -- becomes the first context block (the same for every request with that system prompt,
so it is cached once), each document becomes one or more blocks, and the user's message with the
assistant header is the global block: the layout the RAG prompts of ``lit_block.rag.prompt`` train
on. Without documents the whole rendered prompt is the global block (plain causal attention).

Completions: the documents are the context blocks and the prompt is the global block, as
``generate`` takes them. Every text is tokenized without added special tokens, as ``generate`` does.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from lit_block.errors import UsageError

# for tokenizers without a chat template: plain "role: content" turns, then the assistant's turn
PLAIN_CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n\n{% endfor %}"
                       "{% if add_generation_prompt %}assistant:{% endif %}")
_MARK = "\u2063lit-block-user-content\u2063"  # an invisible separator: found only where the template put it
ENCODED_CHARS = 1 << 24  # characters of text whose token ids a PromptBuilder keeps (about 16 MB of text)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")  # chat templates' markers


@dataclass(frozen=True)
class Document:
    text: str
    segment: bool | None = None  # None: cut when longer than the cutter's max_block_tokens; True: always; False: never


class DocumentCutter:
    """Documents -> block texts: a document longer than ``max_block_tokens`` (or asked to be cut) is cut by
    ``lit_block.segmentation.Segmenter`` (the trained segmenter or a baseline) at ``granularity``."""

    def __init__(self, method: str = "sentence", granularity: str | int = "middle", checkpoint: str | None = None,
                 tokenizer_path: str | None = None, max_block_tokens: int | None = None, count=None):
        from lit_block.segmentation.segmenter import LEVEL_TOKENS, METHODS, parse_granularity

        if method not in METHODS:
            raise UsageError(f"--method: unknown segmentation method {method!r}; choose one of {', '.join(METHODS)}")
        if method == "segmenter" and not checkpoint:
            raise UsageError("--method segmenter needs --checkpoint (a trained segmenter)")
        self.method, self.checkpoint = method, checkpoint
        self.granularity = parse_granularity(granularity)
        size = self.granularity if isinstance(self.granularity, int) else LEVEL_TOKENS[self.granularity]
        # as `lit-block segment` does: a document up to 4 blocks of the granularity stays whole
        self.max_block_tokens = max_block_tokens if max_block_tokens is not None else 4 * size
        if self.max_block_tokens <= 0:
            raise UsageError(f"--max-block-tokens must be positive, got {self.max_block_tokens}")
        self.tokenizer_path = tokenizer_path or "smollm2-135m"
        self.count = count  # text -> tokens (the model's tokenizer); None: the segmenter's tokenizer
        self._segmenter = None
        self._lock = threading.Lock()  # a Segmenter keeps per-document state: one document at a time

    def segmenter(self):
        if self._segmenter is None:
            from lit_block.segmentation.segmenter import Segmenter

            self._segmenter = Segmenter(self.method, self.checkpoint, self.tokenizer_path)
        return self._segmenter

    def cut(self, document: Document) -> list[str]:
        if document.segment is False:
            return [document.text]
        if document.segment is None:
            tokens = self.count(document.text) if self.count is not None else len(
                self.segmenter().tokenizer.encode(document.text).ids)
            if tokens <= self.max_block_tokens:
                return [document.text]
        with self._lock:
            blocks = self.segmenter().segment(document.text, self.granularity, max_block_tokens=self.max_block_tokens)
        return [b.text for b in blocks if b.text]


class PromptBuilder:
    """The model's prompt format: its chat template, how documents are written, and which tokens end a turn."""

    def __init__(self, tokenizer, cutter: DocumentCutter | None = None, document_template: str = "{document}\n\n",
                 chat_template: str | None = None):
        try:
            written = document_template.format(document="\0")
        except (KeyError, IndexError, ValueError) as err:  # another {field}, or a lone brace
            raise UsageError(f"--document-template: {document_template!r} is not a template of {{document}} "
                             f"alone ({err!r}); write a literal brace as {{{{ or }}}}") from None
        if "\0" not in written:
            raise UsageError(f"--document-template must contain {{document}}, got {document_template!r}")
        self.tokenizer = tokenizer
        self.cutter = cutter or DocumentCutter()
        if self.cutter.count is None:
            self.cutter.count = self.count  # sizes in the model's own tokens
        self.document_template = document_template
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None) or PLAIN_CHAT_TEMPLATE
        self._lock = threading.Lock()  # a fast tokenizer refuses concurrent use ("Already borrowed")
        self._encoded: OrderedDict[str, array] = OrderedDict()  # text -> token ids, least recently used first
        self._encoded_chars = 0

    def count(self, text: str) -> int:
        return len(self._token_ids(text))

    def encode(self, text: str) -> list[int]:
        return self._token_ids(text).tolist()  # a new list: the caller may change it

    def _token_ids(self, text: str) -> array:
        """``text``'s token ids. Kept for the texts of the last ``ENCODED_CHARS`` characters: a RAG server sees the
        same passages again and again, and a 630-token passage took 1.4 ms to tokenize on a 2-core CPU, twice a
        request (its size, then its ids), in the server's thread pool beside the engine's thread."""
        with self._lock:
            kept = self._encoded.get(text)
            if kept is not None:
                self._encoded.move_to_end(text)
                return kept
            ids = array("q", self.tokenizer(text, add_special_tokens=False)["input_ids"])  # 8 bytes a token
            if len(text) <= ENCODED_CHARS // 16:  # a huge text would push out everything else
                self._encoded[text] = ids
                self._encoded_chars += len(text)
                while self._encoded_chars > ENCODED_CHARS:
                    self._encoded_chars -= len(self._encoded.popitem(last=False)[0])
            return ids

    @cached_property
    def stop_token_ids(self) -> tuple[int, ...]:
        """The tokenizer's EOS and the template's end-of-turn markers: an instruct model ends its answer with one
        (SmolLM2's ``<|im_end|>``), which must stop generation rather than be decoded away."""
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[m] for m in END_OF_TURN if m in vocab and m in self.chat_template}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return tuple(sorted(ids))

    def render(self, messages: Sequence[dict]) -> str:
        with self._lock:
            return self.tokenizer.apply_chat_template(list(messages), chat_template=self.chat_template,
                                                      add_generation_prompt=True, tokenize=False)

    def document_blocks(self, documents: Sequence[Document]) -> tuple[list[str], list[int]]:
        """Block texts of the documents, in order, and how many blocks each became."""
        blocks, counts = [], []
        for doc in documents:
            pieces = self.cutter.cut(Document(self.document_template.format(document=doc.text), doc.segment))
            blocks += pieces
            counts.append(len(pieces))
        return blocks, counts

    def chat(self, messages: Sequence[dict], documents: Sequence[Document] = ()) -> tuple[list[str], str]:
        """``(context block texts, query text)`` of a conversation (``role`` / ``content`` dicts)."""
        full = self.render(messages)
        if not documents:
            return [], full
        doc_blocks, _ = self.document_blocks(documents)
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:  # nothing to put them before: the documents lead the prompt
            return doc_blocks, full
        marked = [dict(m) for m in messages]
        marked[last_user]["content"] = _MARK
        rendered = self.render(marked)
        prefix = rendered[: rendered.find(_MARK)] if rendered.count(_MARK) == 1 else ""
        if not prefix or not full.startswith(prefix):  # a template that rewrites the content: no header block
            return doc_blocks, full
        return [prefix, *doc_blocks], full[len(prefix):]

    def completion(self, prompt: str, documents: Sequence[Document] = ()) -> tuple[list[str], str]:
        """``(context block texts, query text)`` of a plain completion."""
        return self.document_blocks(documents)[0], prompt
