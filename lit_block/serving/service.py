"""One served model: an OpenAI request -> a checked ``Generation`` for the engine, and its answer -> a response.

Everything a request can get wrong is found here, before the engine sees it, and raised as an
``ApiError`` naming the field: an unknown model (404), a prompt or block past the model's context,
a block whose cache would not fit the store's budget, token ids outside the vocabulary (400).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from lit_block.serving.engine import Job, ServingEngine
from lit_block.serving.generation import Generation, GenerationConfig, GenerationResult
from lit_block.serving.openai_api import ApiError, ChatCompletionRequest, CompletionRequest, ResponseWriter, usage
from lit_block.serving.prompts import Document, PromptBuilder

log = logging.getLogger("lit_block.serving")


def kv_bytes_per_position(model) -> int:
    """Bytes one position of a block's cache takes: keys and values of every layer."""
    from lit_block.model import config_head_dim

    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * config_head_dim(config) * model.sink_embeddings.element_size()


class ServedModel:
    """The model behind the endpoints: its names, prompt format, engine and limits."""

    def __init__(self, engine: ServingEngine, builder: PromptBuilder, name: str, aliases: tuple[str, ...] = (),
                 default_max_tokens: int = 256):
        self.engine, self.builder, self.name = engine, builder, name
        self.names = {name, *aliases}
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        model = engine.model
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.vocab_size = model.config.vocab_size
        self.sinks = model.num_sink_tokens if engine.caching else 0
        self.position_bytes = kv_bytes_per_position(model)
        # OpenAI's system_fingerprint names the backend configuration: here the weights and the caching mode
        self.system_fingerprint = f"fp_{(engine.fingerprint or 'full-prefill')[:12]}"

    # ---------------------------------------------------------------- request -> generation

    def prepare(self, request: ChatCompletionRequest | CompletionRequest, started: float) -> tuple[Generation, dict]:
        """The request's answer, checked and tokenized, ready for the engine; and what its usage reports."""
        chat = isinstance(request, ChatCompletionRequest)
        if request.model not in self.names:
            raise ApiError(404, f"The model {request.model!r} does not exist: this server serves {self.name!r}",
                           "model", "model_not_found")
        field = "messages" if chat else "prompt"
        texts, query = self._prompt(request)
        blocks = [ids for ids in map(self.builder.encode, texts) if ids]
        query_ids = self.builder.encode(query) if isinstance(query, str) else query
        if not query_ids:
            raise ApiError(400, f"{field}: the prompt has no tokens", field)
        max_tokens = self._check_lengths(request, blocks, len(query_ids), field)
        temperature = 1.0 if request.temperature is None else request.temperature  # OpenAI's default
        try:
            config = GenerationConfig(
                max_new_tokens=max_tokens, do_sample=temperature > 0, temperature=temperature or 1.0,
                top_p=1.0 if request.top_p is None else request.top_p, stop=tuple(request.stop or ()), seed=request.seed,
                stop_token_ids=self.builder.stop_token_ids if chat else (),
                stop_at_eos=not (request.lit_block and request.lit_block.ignore_eos))
            generation = self.engine.generation(blocks, query_ids, config, started=started)
        except ValueError as err:  # what generate itself refuses (a sliding window, say)
            raise ApiError(400, f"{field}: {err}", field) from err
        return generation, {"prompt_tokens": sum(map(len, blocks)) + len(query_ids), "blocks": len(blocks)}

    def _prompt(self, request) -> tuple[list[str], str | list[int]]:
        """The context blocks' texts and the query (a text, or a completion's token ids)."""
        from jinja2 import TemplateError

        documents = [Document(d.text, d.segment) for d in request.documents()]
        try:
            if isinstance(request, ChatCompletionRequest):
                return self.builder.chat([{"role": m.role, "content": m.text()} for m in request.messages], documents)
            prompt = request.prompt_value()
            if isinstance(prompt, str):
                return self.builder.completion(prompt, documents)
            bad = [t for t in prompt if not 0 <= t < self.vocab_size]
            if bad:
                raise ApiError(400, f"prompt: token id {bad[0]} is outside the vocabulary (0 .. {self.vocab_size - 1})",
                               "prompt")
            return self.builder.completion("", documents)[0], list(prompt)
        except TemplateError as err:  # e.g. "roles must alternate user/assistant"
            raise ApiError(400, f"messages: the model's chat template refuses them: {err}", "messages") from err
        except ValueError as err:  # a document the segmenter cannot cut
            raise ApiError(400, f"lit_block.documents: {err}", "lit_block.documents") from err

    def _check_lengths(self, request, blocks: list[list[int]], query_tokens: int, field: str) -> int:
        """The answer's token budget, after checking every block and the whole prompt against the context and the
        store's budget."""
        limit = self.max_positions
        store = self.engine.store
        for i, ids in enumerate(blocks):
            positions = len(ids) + self.sinks
            if limit is not None and positions > limit:
                raise ApiError(400, f"lit_block.documents: block {i} has {len(ids)} tokens (+{self.sinks} sinks), more "
                               f"than the model's context of {limit}", "lit_block.documents", "context_length_exceeded")
            if store is not None and positions * self.position_bytes > store.max_bytes:
                raise ApiError(400, f"lit_block.documents: block {i}'s cache needs {positions * self.position_bytes:,} "
                               f"bytes, more than the store's budget of {store.max_bytes:,}", "lit_block.documents")
        prompt = sum(len(ids) + self.sinks for ids in blocks) + query_tokens
        asked = getattr(request, "max_completion_tokens", None) or request.max_tokens
        if limit is None:
            return asked or self.default_max_tokens
        if prompt >= limit:
            raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, the {field} and "
                           f"lit_block.documents take {prompt} positions (sinks included), leaving none for the "
                           f"completion. Shorten the {field} or the documents.", field, "context_length_exceeded")
        if asked is None:
            return min(self.default_max_tokens, limit - prompt)
        if prompt + asked > limit:
            param = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) else "max_tokens"
            raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                           f"{prompt + asked} tokens ({prompt} in the {field} and documents, {asked} in {param}). "
                           f"Reduce {param} or the prompt.", param, "context_length_exceeded")
        return asked

    # ---------------------------------------------------------------- engine -> response

    async def run(self, request: ChatCompletionRequest | CompletionRequest, generation: Generation, info: dict):
        """The JSON body (not streaming) or an async iterator of SSE lines (streaming)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(generation, stream=request.stream,
                  notify=lambda kind, payload: loop.call_soon_threadsafe(events.put_nowait, (kind, payload)))
        writer = ResponseWriter(isinstance(request, ChatCompletionRequest), request.model, self.system_fingerprint)
        try:
            self.engine.submit(job)
        except RuntimeError as err:
            raise ApiError(503, str(err), kind="server_error", code="shutting_down") from err
        if request.stream:
            include = bool(request.stream_options and request.stream_options.include_usage)
            return self._stream(job, events, writer, info, include)
        try:
            while True:
                kind, payload = await events.get()
                if kind == "error":
                    raise _api_error(payload)
                if kind == "done":
                    return writer.response(payload.text, payload.stopped_by, self._usage(job, payload, info))
        finally:
            job.cancelled.set()  # a client that went away stops its answer (a finished one is unaffected)

    async def _stream(self, job: Job, events: asyncio.Queue, writer: ResponseWriter, info: dict,
                      include_usage: bool) -> AsyncIterator[str]:
        try:
            while True:
                kind, payload = await events.get()
                if kind == "first":  # the first token's logits exist: the client's TTFT ends with this chunk
                    yield _sse(writer.chunk(first=True))
                elif kind == "delta":
                    yield _sse(writer.chunk(text=payload))
                elif kind == "done":
                    sent = job.sent  # every delta the engine emitted before "done" is already sent
                    rest = payload.text[len(sent):] if payload.text.startswith(sent) else ""
                    yield _sse(writer.chunk(text=rest, stopped_by=payload.stopped_by))
                    if include_usage:
                        yield _sse(writer.usage_chunk(self._usage(job, payload, info)))
                    yield "data: [DONE]\n\n"
                    return
                elif kind == "error":  # the status line is sent already: the error travels as a chunk
                    yield _sse(_api_error(payload).body())
                    return
        finally:
            job.cancelled.set()

    def _usage(self, job: Job, result: GenerationResult, info: dict) -> dict:
        stats = result.block_stats
        extension = {"blocks": info["blocks"], "block_hits": stats.get("hits", 0), "block_misses": stats.get("misses", 0),
                     "ttft_ms": round(result.ttft_s * 1e3, 3), "queue_ms": round(job.queue_s * 1e3, 3),
                     "cache": self.engine.caching}
        return usage(info["prompt_tokens"], len(result.token_ids), job.generation.cached_tokens, extension)


def _api_error(err: BaseException) -> ApiError:
    if isinstance(err, ApiError):
        return err
    if isinstance(err, ValueError):
        return ApiError(400, str(err))
    log.error("request failed in the engine", exc_info=err)
    return ApiError(500, f"the model failed on this request ({type(err).__name__})", kind="server_error",
                    code="internal_error")


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

