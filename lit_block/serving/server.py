"""``lit-block serve MODEL``: an OpenAI-compatible HTTP server whose context documents are cached blocks.

    lit-block serve exports/distilled                          # http://127.0.0.1:8000/v1
    lit-block serve smollm2-135m --port 8080 --store-gib 2 --granularity 256
    lit-block serve exports/distilled --cache false            # full prefill of every prompt (the baseline)

Endpoints: POST /v1/chat/completions and /v1/completions (streaming or not; ``max_tokens``,
``temperature``, ``top_p``, ``stop``, ``seed``), GET /v1/models, GET /metrics (Prometheus), GET /health.
Context documents ride in the ``lit_block`` extension field, ``{"documents": [...]}``: each one is one
or more cached blocks (long ones cut by ``--method`` at ``--granularity``); usage reports the
request's block hits and misses and its TTFT. One ``BlockKVStore`` under ``--store-gib`` serves every
request; concurrent requests' block misses are prefilled together (``lit_block.serving.engine``).
Built on FastAPI and uvicorn; docs/serve.md says why, and how to scale out. Binds 127.0.0.1 unless
``--host`` says otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

from lit_block.errors import UsageError
from lit_block.serving.engine_options import add_engine_options
from lit_block.serving.openai_api import (ApiError, ChatCompletionRequest, CompletionRequest, error_body, field_path,
                                          most_specific)

log = logging.getLogger("lit_block.serving")
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/metrics", "/health")


def create_app(served):
    """The FastAPI application serving ``served`` (a ``ServedModel``); closing the app closes its engine.

    The handlers find the model in ``app.state``, emptied when the app closes: FastAPI keeps its endpoints in a
    process-wide cache, and an endpoint closing over ``served`` would keep the engine, its store and its decode slab
    (GBs of device memory) alive after the server stopped (a second server in the process, as ``bench serve --repeat
    2``, then ran out of memory on an H100)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        app.state.served.engine.close()
        app.state.served = None  # what the engine holds goes with it

    app = FastAPI(title="lit-block", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.served = served
    del served  # from here on, app.state's only

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.url.path if request.url.path in ROUTES else "other"
        app.state.served.engine.metrics.request(route, response.status_code)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, err: RequestValidationError):
        return JSONResponse(validation_error_body(err.errors()), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(err.detail), kind), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request, err: Exception):
        log.error("request failed", exc_info=err)
        return JSONResponse(error_body(f"internal error ({type(err).__name__})", "server_error", code="internal_error"),
                            status_code=500)

    async def answer(request):
        started = time.perf_counter()  # TTFT counts from the request's arrival
        served = app.state.served
        # templates, the segmenter and the tokenizer are CPU work: off the event loop, beside the engine's
        generation, info = await run_in_threadpool(served.prepare, request, started)
        result = await served.run(request, generation, info)
        if request.stream:
            return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return result

    # the request models are module globals: FastAPI resolves these (string) annotations in this module
    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest):
        return await answer(request)

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest):
        return await answer(request)

    def model_card(served) -> dict:
        return {"id": served.name, "object": "model", "created": served.created, "owned_by": "lit-block"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(app.state.served)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        served = app.state.served
        if name not in served.names:
            raise ApiError(404, f"The model {name!r} does not exist: this server serves {served.name!r}", "model",
                           "model_not_found")
        return model_card(served)

    @app.get("/metrics")
    async def prometheus():
        engine = app.state.served.engine
        stats = engine.store.stats() if engine.store is not None else None
        return PlainTextResponse(engine.metrics.render(stats, engine.gauges()), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health():
        served = app.state.served
        return {"status": "ok", "model": served.name, "cache": served.engine.caching}

    return app


def validation_error_body(errors: list[dict]) -> dict:
    """pydantic's first complaint as OpenAI's error, naming the field."""
    if not errors:
        return error_body("invalid request")
    first = most_specific(errors)
    param, kind = field_path(tuple(first.get("loc", ()))), first.get("type", "")
    if kind == "json_invalid":
        return error_body(f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})")
    if param is None:
        return error_body("the request body must be a JSON object of the endpoint's fields")
    if kind == "extra_forbidden":
        return error_body(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing":
        return error_body(f"{param} is required", param=param)
    if kind == "too_short":
        return error_body(f"{param} must not be empty", param=param)
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    return error_body(f"{param}: {message} (got {first.get('input')!r:.80})", param=param)


class BackgroundServer:
    """uvicorn serving ``app`` from a thread (tests, benchmarks): ``url`` once started, ``stop()`` to end it."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="lit-block-uvicorn", daemon=True)
        self.host = host

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]  # port 0: the one the OS chose
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


# ---------------------------------------------------------------- the command


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block serve", __doc__)
    p.add_argument("model", nargs="?", default="smollm2-135m",
                   help="an exported student folder, an embedded name or a model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--served-model-name", default=None,
                   help="the name requests' `model` field must give (default: the folder's name, or MODEL as given)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--sinks", type=int, default=None, help="sink tokens per block (default: the folder's saved count)")
    p.add_argument("--cache", type=bool, default=True,
                   help="false: no block store, every prompt prefilled whole with full attention (the baseline)")
    p.add_argument("--store-gib", type=float, default=4.0, help="byte budget of the shared block KV store (GiB)")
    p.add_argument("--max-active-requests", type=int, default=64, help="answers decoding at once; more wait in the queue")
    p.add_argument("--batch-decode", type=bool, default=True,
                   help="decode every active answer in one forward per step (false: one forward per answer)")
    add_engine_options(p)
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="after an idle spell, how long to wait for the rest of a burst of requests before prefilling")
    p.add_argument("--default-max-tokens", type=int, default=256,
                   help="answer length when a request gives no max_tokens (capped by the context left)")
    p.add_argument("--method", default=None,
                   help="segmentation method that cuts long documents into blocks: segmenter (with --checkpoint), "
                        "fixed, regex, sentence, texttiling or semantic (default: segmenter with a checkpoint, else "
                        "sentence)")
    p.add_argument("--checkpoint", default=None, help="trained segmenter checkpoint (for --method segmenter)")
    p.add_argument("--granularity", default="middle", help="coarse, middle, fine, or a block size in tokens")
    p.add_argument("--max-block-tokens", type=int, default=None,
                   help="documents longer than this are cut into blocks (default: 4 x the granularity's block size)")
    p.add_argument("--document-template", default="{document}\n\n", help="how a document is written as context")
    p.add_argument("--chat-template", default=None,
                   help="a Jinja chat template file (default: the tokenizer's; a plain 'role: content' one without)")
    p.add_argument("--log-level", default="info", help="uvicorn's log level")
    return p


def load_served(args):
    """The ``ServedModel`` that ``args`` describe: model loaded, store, engine and prompt format."""
    import torch

    from lit_block.model import BlockAttentionLM
    from lit_block.attention.transformers_hook import decode_kernel_problem
    from lit_block.model_sources import resolve_model_path
    from lit_block.serving.engine import ServingEngine
    from lit_block.serving.kv_store import BlockKVStore
    from lit_block.serving.prompts import DocumentCutter, PromptBuilder
    from lit_block.serving.service import ServedModel

    for name in ("port", "max_batch_requests", "max_active_requests", "default_max_tokens"):
        if getattr(args, name) < (0 if name == "port" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'port' else 'positive'}, "
                             f"got {getattr(args, name)}")
    if args.store_gib <= 0 or args.batch_window_ms < 0:
        raise UsageError("--store-gib must be positive and --batch-window-ms >= 0")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device here")
    if problem := decode_kernel_problem(args.decode_kernel, device):
        raise UsageError(f"--decode-kernel {args.decode_kernel}: {problem}")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"), None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"--dtype: unknown dtype {args.dtype!r}")
    model = BlockAttentionLM.from_pretrained(args.model, num_sink_tokens=args.sinks, dtype=dtype)
    model = model.to(device).eval().requires_grad_(False)  # frozen while served: the store's fingerprint is computed once
    if model.tokenizer is None:
        raise UsageError(f"{args.model}: no tokenizer next to the weights; the server needs one")
    path = resolve_model_path(str(args.model))
    template = Path(args.chat_template).read_text() if args.chat_template else None
    method = args.method or ("segmenter" if args.checkpoint else "sentence")
    cutter = DocumentCutter(method, args.granularity, args.checkpoint, str(path), args.max_block_tokens)
    if method == "segmenter":
        cutter.segmenter().module  # noqa: B018 - a missing or bad checkpoint fails now, not at the first long document
    builder = PromptBuilder(model.tokenizer, cutter, args.document_template, template)
    store = BlockKVStore(max_bytes=int(args.store_gib * 2**30)) if args.cache else None
    engine = ServingEngine(model, store, args.max_batch_requests, args.max_active_requests, args.batch_window_ms / 1e3,
                           batch_decode=args.batch_decode, batch_queries=args.batch_queries,
                           decode_kernel=args.decode_kernel, fuse_pointwise=args.fuse_pointwise)
    name = args.served_model_name or (Path(path).name if Path(path).is_dir() else str(args.model))
    return ServedModel(engine, builder, name, aliases=(str(args.model),), default_max_tokens=args.default_max_tokens)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    from lit_block.serving.engine import prefer_expandable_segments

    prefer_expandable_segments()

    served = load_served(args)
    log.warning("serving %s (%s) on http://%s:%s/v1", served.name, "block cache" if served.engine.caching else
                "full prefill", args.host, args.port)
    uvicorn.run(create_app(served), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
