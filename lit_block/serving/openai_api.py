"""The OpenAI wire format: request schemas (with the ``lit_block`` extension), errors, responses and chunks.

Requests are validated by pydantic as FastAPI parses them; a field out of range, of the wrong type or
unknown becomes a 400 whose ``error.param`` names it (``temperature``, ``lit_block.documents[1].text``),
as OpenAI's own API answers. The ``lit_block`` extension (sent with the openai client as
``extra_body={"lit_block": {...}}``)::

    "lit_block": {"documents": ["a passage", {"text": "a long report ...", "segment": true}], "ignore_eos": false}

Each document becomes one context block, or several when it is longer than the server's
``--max-block-tokens`` (``segment: true`` always cuts it at ``--granularity``, ``false`` never does).
Usage gains ``prompt_tokens_details.cached_tokens`` (OpenAI's field: prompt tokens whose blocks were
found in the store) and a ``lit_block`` object: blocks, block_hits, block_misses, ttft_ms, queue_ms.
``ignore_eos`` (as vLLM's) makes every answer ``max_tokens`` long: benchmarks compare equal work.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SEED = 2**63 - 1


class ApiError(Exception):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def field_path(loc: tuple) -> str | None:
    """pydantic's error location (``("body", "lit_block", "documents", 0, "text")``) as a field path
    (``lit_block.documents[0].text``); union members' type tags (``str``, ``list[int]``) are dropped."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part[:1].isupper() or part in ("str", "int", "float", "bool") or part.startswith("function-"):
            continue  # which member of a union pydantic was trying (a type, not a field: fields are lower case)
        else:
            path += f".{part}" if path else part
    return path or None


def most_specific(errors: list[dict]) -> dict:
    """Of pydantic's complaints (one per member of a union), the one deepest in the request: a document
    ``{"text": ""}`` is blamed on ``documents[0].text``, not on not being a string."""
    return max(errors, key=lambda e: len((field_path(tuple(e.get("loc", ()))) or "").replace("[", ".").split(".")))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class DocumentIn(_Strict):
    text: str = Field(min_length=1, description="the document's text")
    segment: bool | None = Field(None, description="true: always cut at the server's granularity; false: never")


class BlockExtension(_Strict):
    documents: list[str | DocumentIn] = Field(default_factory=list, description="context documents, in order")
    ignore_eos: bool = Field(False, description="generate max_tokens tokens whatever the model says (benchmarks)")

    @field_validator("documents")
    @classmethod
    def _non_empty(cls, documents):
        for i, doc in enumerate(documents):
            if isinstance(doc, str) and not doc:
                raise ValueError(f"document {i} is empty")
        return documents


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """Fields both endpoints share."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1  # one choice per request (ask again for more)
    user: str | None = None
    presence_penalty: Literal[0] = 0  # accepted at OpenAI's defaults only: penalties are not implemented
    frequency_penalty: Literal[0] = 0
    logprobs: Literal[False] | None = None
    lit_block: BlockExtension | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("a stop sequence is empty")
        return stops

    def documents(self) -> list[DocumentIn]:
        docs = self.lit_block.documents if self.lit_block else []
        return [DocumentIn(text=d) if isinstance(d, str) else d for d in docs]


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: Literal[False] = False
    suffix: None = None
    best_of: Literal[1] | None = None

    def prompt_value(self) -> str | list[int]:
        """The one prompt (a text or token ids); a batch of several is refused."""
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            if len(p) != 1:
                raise ApiError(400, f"prompt: {len(p)} prompts given; send one per request", "prompt")
            p = p[0]
        if len(p) == 0:
            raise ApiError(400, "prompt is empty", "prompt")
        return p


# ---------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(stopped_by: str) -> str:
    return "length" if stopped_by == "length" else "stop"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int, extension: dict) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}, "lit_block": extension}


class ResponseWriter:
    """Bodies and SSE chunks of one request, chat or text completion."""

    def __init__(self, chat: bool, model: str, system_fingerprint: str):
        self.chat, self.model, self.fingerprint = chat, model, system_fingerprint
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())

    def _envelope(self, streaming: bool) -> dict:
        kind = ("chat.completion.chunk" if streaming else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint}

    def response(self, text: str, stopped_by: str, usage_: dict) -> dict:
        choice = {"index": 0, "finish_reason": finish_reason(stopped_by), "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": text}} if self.chat else {"text": text})
        return {**self._envelope(False), "choices": [choice], "usage": usage_}

    def chunk(self, text: str | None = None, stopped_by: str | None = None, first: bool = False) -> dict:
        reason = finish_reason(stopped_by) if stopped_by else None
        if self.chat:
            delta = ({"role": "assistant", "content": ""} if first else {}) | ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        return {**self._envelope(True), "choices": [choice]}

    def usage_chunk(self, usage_: dict) -> dict:
        return {**self._envelope(True), "choices": [], "usage": usage_}
