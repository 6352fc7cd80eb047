"""``lit-block serve``: the real server on 127.0.0.1, called with the official openai client (tiny random model).

Answers equal ``generate``'s for the same seed, streaming equals non-streaming, concurrent requests sharing
blocks answer as sequential ones do, and every bad input gets an OpenAI-style 4xx naming the field. (That the store
builds its blocks through ``lit_block.layout``: ``test_layout.py``.)
"""

from __future__ import annotations

import gc
import json
import re
import urllib.error
import urllib.request
import weakref
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch

from conftest import decode_together
from lit_block import BlockAttentionLM
from lit_block.serving import BlockKVStore, GenerationConfig, generate
from lit_block.serving.prompts import Document, DocumentCutter, PromptBuilder
from lit_block.serving.server import BackgroundServer, build_parser, create_app, load_served

# turns end with </s>, the tokenizer's EOS, as an instruct model's end with <|im_end|>
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
DOCS = ["In the beginning God created the heaven and the earth.",
        "And the earth was without form, and void; and darkness was upon the face of the deep.",
        "And God said, Let there be light: and there was light. And God saw the light, that it was good: and God "
        "divided the light from the darkness. And God called the light Day, and the darkness he called Night. And "
        "the evening and the morning were the first day."]  # past --max-block-tokens: cut into blocks
QUERY = "And God called"
MAX_BLOCK_TOKENS = 40
CONTEXT = 256
TOO_LONG = "light " * 300  # past the context


@pytest.fixture(scope="module")
def student_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model exported as a student: two random sinks and a chat template."""
    folder = tmp_path_factory.mktemp("tiny_student")
    lm = BlockAttentionLM.from_pretrained(tiny_model_dir, num_sink_tokens=2)
    torch.manual_seed(1)
    with torch.no_grad():
        lm.sink_embeddings.normal_()  # sinks unlike any token: a misplaced one shows
    lm.tokenizer.chat_template = CHAT_TEMPLATE
    lm.config.max_position_embeddings = CONTEXT  # a short context: prompts past it are cheap to build
    lm.save_pretrained(folder)
    return folder


def start(folder, *options: str):
    # --device cpu: the references are float32 on CPU; on a GPU machine the server would take CUDA in bfloat16, and
    # sampling there draws from CUDA's generator (answers equal to the references only on the same device and dtype)
    served = load_served(build_parser().parse_args([str(folder), "--port", "0", "--served-model-name", "tiny",
                                                    "--max-block-tokens", str(MAX_BLOCK_TOKENS), "--device", "cpu",
                                                    *options]))
    server = BackgroundServer(create_app(served)).start()
    return served, server, openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def live(student_dir):
    served, server, client = start(student_dir)
    yield served, server, client
    server.stop()


@pytest.fixture(scope="module")
def reference(student_dir):
    """The same student loaded apart, and the server's prompt format: what generate() is given."""
    lm = BlockAttentionLM.from_pretrained(student_dir).eval()
    cutter = DocumentCutter("sentence", "middle", tokenizer_path=str(student_dir), max_block_tokens=MAX_BLOCK_TOKENS)
    return lm, PromptBuilder(lm.tokenizer, cutter)


def sampling_config(max_tokens: int, temperature: float = 1.0, **kw) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=max_tokens, do_sample=temperature > 0, temperature=temperature or 1.0, **kw)


SAMPLINGS = [dict(temperature=0), dict(temperature=1.3, top_p=0.9, seed=7), dict(temperature=0.9, seed=3, stop=["e", "th"])]


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_completions_equal_generate(live, reference, sampling):
    _, _, client = live
    lm, builder = reference
    answer = client.completions.create(model="tiny", prompt=QUERY, max_tokens=12, extra_body={"lit_block": {"documents": DOCS}},
                                       **sampling)
    blocks, query = builder.completion(QUERY, [Document(d) for d in DOCS])
    assert len(blocks) > len(DOCS)  # the long document was cut
    stop = tuple(sampling.get("stop", ()))
    expected = generate(lm, blocks, query, sampling_config(12, sampling["temperature"], top_p=sampling.get("top_p", 1.0),
                                                           seed=sampling.get("seed"), stop=stop), store=BlockKVStore())
    assert answer.choices[0].text == expected.text
    assert answer.choices[0].finish_reason == ("length" if expected.stopped_by == "length" else "stop")
    assert answer.usage.completion_tokens == len(expected.token_ids)
    assert answer.usage.lit_block["blocks"] == len(blocks)


def test_chat_applies_the_template_and_equals_generate(live, reference):
    _, _, client = live
    lm, builder = reference
    messages = [{"role": "system", "content": "Answer from the passages."}, {"role": "user", "content": "Who made light?"}]
    answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=1.1, seed=5,
                                            extra_body={"lit_block": {"documents": DOCS[:2]}})
    blocks, query = builder.chat(messages, [Document(d) for d in DOCS[:2]])
    # the template's header (system turn, user header) is the first block; the user's turn and the assistant header
    # are the global block: the model answers as an instruct model was trained to, and stops at its end of turn
    assert blocks[0] == "<s>system\nAnswer from the passages.</s>\n<s>user\n" and blocks[1:] == [d + "\n\n" for d in DOCS[:2]]
    assert query == "Who made light?</s>\n<s>assistant\n"
    assert lm.tokenizer.eos_token_id in builder.stop_token_ids
    expected = generate(lm, blocks, query, sampling_config(10, 1.1, seed=5, stop_token_ids=builder.stop_token_ids))
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].message.role == "assistant" and answer.object == "chat.completion"
    usage = answer.usage
    assert usage.prompt_tokens == sum(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in [*blocks, query])
    assert set(usage.lit_block) >= {"blocks", "block_hits", "block_misses", "ttft_ms", "queue_ms"}
    assert usage.lit_block["blocks"] == 3 and usage.lit_block["ttft_ms"] > 0


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_streaming_equals_non_streaming(live, chat, sampling):
    _, _, client = live
    sampling = {"temperature": 1.0, "seed": 11, **sampling}  # a seed for every sampled request: both runs must agree
    extra = {"lit_block": {"documents": DOCS[:2]}}
    if chat:
        call = client.chat.completions.create
        kw = dict(model="tiny", messages=[{"role": "user", "content": QUERY}], max_tokens=14, extra_body=extra, **sampling)
    else:
        call = client.completions.create
        kw = dict(model="tiny", prompt=QUERY, max_tokens=14, extra_body=extra, **sampling)
    whole = call(**kw)
    chunks = list(call(stream=True, stream_options={"include_usage": True}, **kw))
    pieces = [(c.choices[0].delta.content if chat else c.choices[0].text) or "" for c in chunks if c.choices]
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    text = whole.choices[0].message.content if chat else whole.choices[0].text
    assert "".join(pieces) == text
    assert reasons == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.lit_block["block_hits"] == (3 if chat else 2)  # the second call finds every block


def test_concurrent_requests_sharing_blocks_answer_as_sequential_ones(student_dir, reference):
    """Eight requests over overlapping documents at once (and bad ones among them), on an empty store: each shared
    block is prefilled once, the misses of a burst together, and every answer is the one generate() gives alone."""
    lm, builder = reference
    served, server, client = start(student_dir, "--batch-window-ms", "150")
    try:
        jobs = [([DOCS[i % 3], DOCS[(i + 1) % 3]], f"{QUERY} {i}", dict(temperature=0.7, seed=i)) for i in range(8)]

        def ask(job):
            docs, prompt, sampling = job
            return client.completions.create(model="tiny", prompt=prompt, max_tokens=8,
                                             extra_body={"lit_block": {"documents": docs}}, **sampling).choices[0].text

        def bad(_):
            with pytest.raises(openai.BadRequestError):
                client.completions.create(model="tiny", prompt=QUERY, max_tokens=8,
                                          extra_body={"lit_block": {"documents": [{"text": TOO_LONG, "segment": False}]}})

        with ThreadPoolExecutor(10) as pool:
            failing = [pool.submit(bad, None) for _ in range(2)]
            answers = list(pool.map(ask, jobs))
            [f.result() for f in failing]
        for (docs, prompt, sampling), answer in zip(jobs, answers):
            blocks, query = builder.completion(prompt, [Document(d) for d in docs])
            alone = generate(lm, blocks, query, sampling_config(8, sampling["temperature"], seed=sampling["seed"]))
            assert answer == alone.text
        distinct = {tuple(builder.encode(b)) for job in jobs for b in builder.completion(job[1], [Document(d) for d in job[0]])[0]}
        stats = served.engine.store.stats()
        assert stats["misses"] == len(distinct)  # every shared block prefilled once
        assert metric(server, "lit_block_prefill_batches_total") < len(jobs)  # a burst's misses prefilled together
        # a stored block is never written by the requests that read it
        snapshot = {key: (kv.keys.clone(), kv.values.clone()) for key, kv in served.engine.store.entries.items()}
        list(ThreadPoolExecutor(4).map(ask, jobs[:4]))
        for key, (keys, values) in snapshot.items():
            assert torch.equal(served.engine.store.entries[key].keys, keys)
            assert torch.equal(served.engine.store.entries[key].values, values)
    finally:
        server.stop()


def metric(server, name: str) -> float:
    text = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)[1])


USER = [{"role": "user", "content": "Hello"}]
BAD = [  # (endpoint, fields, status, param)
    ("chat", dict(messages=[]), 400, "messages"),
    ("chat", dict(messages=[{"role": "user", "content": TOO_LONG}]), 400, "messages"),
    ("chat", dict(messages=USER, max_tokens=CONTEXT), 400, "max_tokens"),
    ("chat", dict(messages=USER, model="gpt-4o"), 404, "model"),
    ("chat", dict(messages=USER, temperature=2.5), 400, "temperature"),
    ("chat", dict(messages=USER, temperature=-1), 400, "temperature"),
    ("chat", dict(messages=USER, top_p=0), 400, "top_p"),
    ("chat", dict(messages=USER, top_p=1.5), 400, "top_p"),
    ("chat", dict(messages=USER, max_tokens=0), 400, "max_tokens"),
    ("chat", dict(messages=USER, seed=-3), 400, "seed"),
    ("chat", dict(messages=USER, n=2), 400, "n"),
    ("chat", dict(messages=USER, stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("chat", dict(messages=USER, stop=[""]), 400, "stop"),
    ("chat", dict(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages[0].role"),
    ("chat", dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400,
     "messages[0].content[0].type"),
    ("chat", dict(messages=USER, extra_body={"temprature": 0.5}), 400, "temprature"),
    ("chat", dict(messages=USER, extra_body={"lit_block": {"docs": ["x"]}}), 400, "lit_block.docs"),
    ("chat", dict(messages=USER, extra_body={"lit_block": {"documents": [""]}}), 400, "lit_block.documents"),
    ("chat", dict(messages=USER, extra_body={"lit_block": {"documents": [{"text": ""}]}}), 400, "lit_block.documents[0].text"),
    ("chat", dict(messages=USER, extra_body={"lit_block": {"documents": [{"text": TOO_LONG, "segment": False}]}}), 400,
     "lit_block.documents"),
    ("completions", dict(prompt=""), 400, "prompt"),
    ("completions", dict(prompt=[5, 999999]), 400, "prompt"),
    ("completions", dict(prompt=["one", "two"]), 400, "prompt"),
    ("completions", dict(prompt="x", echo=True), 400, "echo"),
]


@pytest.mark.parametrize("endpoint, fields, status, param", BAD, ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gets_an_openai_error_naming_the_field(live, endpoint, fields, status, param):
    _, _, client = live
    call = client.chat.completions.create if endpoint == "chat" else client.completions.create
    with pytest.raises(openai.APIStatusError) as caught:
        call(**{"model": "tiny", "max_tokens": 4, **fields})
    err = caught.value
    assert err.status_code == status
    assert err.body["param"] == param and err.body["type"] and param.split("[")[0].split(".")[-1] in err.body["message"]


def test_unparsable_bodies_and_unknown_routes_get_openai_errors(live):
    _, server, _ = live
    for path, body, status in [("/v1/chat/completions", b"{not json", 400), ("/v1/completions", b"[1, 2]", 400),
                               ("/v1/embeddings", b"{}", 404)]:
        request = urllib.request.Request(server.url + path, body, {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request)
        assert caught.value.code == status
        assert set(json.loads(caught.value.read())["error"]) == {"message", "type", "param", "code"}


def test_bad_requests_leave_the_store_and_other_answers_alone(live):
    _, _, client = live
    kw = dict(model="tiny", prompt=QUERY, max_tokens=8, temperature=0, extra_body={"lit_block": {"documents": DOCS[:2]}})
    before = client.completions.create(**kw).choices[0].text
    for fields, _, _ in [(b[1], b[2], b[3]) for b in BAD if b[0] == "completions"]:
        with pytest.raises(openai.APIStatusError):
            client.completions.create(**{**kw, **fields})
    assert client.completions.create(**kw).choices[0].text == before


def test_metrics_endpoint_speaks_prometheus(live):
    served, server, client = live
    client.completions.create(model="tiny", prompt=QUERY, max_tokens=3, extra_body={"lit_block": {"documents": DOCS[:1]}})
    text = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    stats = served.engine.store.stats()
    for key in ("hits", "misses", "evictions"):
        assert metric(server, f"lit_block_store_{key}_total") == stats[key]
    assert metric(server, "lit_block_store_bytes") == stats["bytes"] > 0
    buckets = [float(v) for v in re.findall(r'^lit_block_ttft_seconds_bucket\{le="[^"]+"\} (\S+)$', text, re.M)]
    assert buckets == sorted(buckets) and buckets[-1] == metric(server, "lit_block_ttft_seconds_count") > 0
    assert re.search(r'^lit_block_requests_total\{endpoint="/v1/completions",status="200"\} \d+$', text, re.M)
    phases = dict(re.findall(r'^lit_block_engine_seconds_total\{phase="(\w+)"\} (\S+)$', text, re.M))
    assert set(phases) == {"fetch", "prefill", "decode"} and all(float(v) > 0 for v in phases.values())
    for line in text.splitlines():  # every line a comment or `name{labels} number`
        assert line.startswith("# ") or re.fullmatch(r"[a-z_]+(\{[^}]*\})? -?[0-9.e+-]+", line), line


def test_decode_counters_count_each_answers_steps(live):
    """An answer of n tokens alone runs n - 1 decode rows (its first token comes from the prefill, its last is never
    run), one row a step; the idle engine keeps its slab, so the same request again builds none."""
    _, server, client = live
    names = ("lit_block_decode_steps_total", "lit_block_decode_rows_total", "lit_block_decode_slab_rebuilds_total")
    for most_rebuilds in (1, 0):
        before = [metric(server, name) for name in names]
        answer = client.completions.create(model="tiny", prompt=QUERY, max_tokens=5,
                                           extra_body={"lit_block": {"documents": DOCS[:1], "ignore_eos": True}})
        steps, rows, rebuilds = (metric(server, name) - b for name, b in zip(names, before))
        assert answer.usage.completion_tokens == 5
        assert steps == rows == 4 and rebuilds <= most_rebuilds


def test_the_server_fingerprints_its_model_once(live, monkeypatch):
    import lit_block.serving.kv_store as kv_store

    calls = []
    monkeypatch.setattr(kv_store, "model_fingerprint", lambda model: calls.append(model) or "stale")
    _, _, client = live
    client.completions.create(model="tiny", prompt=QUERY, max_tokens=2, extra_body={"lit_block": {"documents": ["New text."]}})
    assert calls == []  # computed at start-up (weights are frozen while served), not on each lookup


def test_models_endpoint_and_default_host(live):
    _, _, client = live
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    assert build_parser().parse_args(["x"]).host == "127.0.0.1"


def test_a_stopped_server_lets_its_engine_and_store_go(student_dir):
    """Nothing outlives a server (FastAPI caches its endpoints process-wide): a second server in the process, as
    ``bench serve --repeat 2``, must not find the first one's store and decode slab still holding device memory."""
    served, server, client = start(student_dir)
    client.completions.create(model="tiny", prompt=QUERY, max_tokens=2, extra_body={"lit_block": {"documents": DOCS}})
    engine, store = weakref.ref(served.engine), weakref.ref(served.engine.store)
    assert served.engine.store.stats()["entries"] > 0
    server.stop()
    del served, server, client
    gc.collect()
    assert engine() is None and store() is None


def test_serve_is_a_subcommand_with_clear_errors(capsys, tmp_path):
    from lit_block.cli import main

    assert main(["serve", "--help"]) == 0
    assert "--host" in capsys.readouterr().out
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


# ---------------------------------------------------------------- batched decoding


def test_batched_decoding_equals_each_answer_alone(reference):
    """Answers of different lengths join the batch at different steps (in free rows, or by a reallocation), leave it
    as they end, and each one's tokens are those it gets alone; full-prefill answers (no store) batch the same way."""
    from lit_block.serving import Generation
    from lit_block.serving.decode_batch import DecodeBatch

    lm, builder = reference
    texts = [builder.completion(f"{QUERY} {i}", [Document(d) for d in DOCS[: 1 + i % 3]]) for i in range(6)]
    configs = [sampling_config(4 + 3 * i, 0.0 if i % 2 else 1.2, seed=i, stop_at_eos=False) for i in range(6)]
    joins = [0, 0, 1, 4, 4, 9]  # the step at which each answer starts decoding
    for full in (False, True):
        batch = DecodeBatch(lm)
        answers = [Generation(lm, blocks, query, config, full_attention=full) for (blocks, query), config in
                   zip(texts, configs)]
        decode_together(batch, answers, joins, BlockKVStore())
        for answer, (blocks, query), config in zip(answers, texts, configs):
            alone = generate(lm, blocks, query, config, full_attention=full)
            assert answer.token_ids == alone.token_ids and answer.stopped_by == alone.stopped_by
        assert batch.rebuilds >= 1


def test_answers_join_free_rows_without_moving_the_others(reference, monkeypatch):
    """Rows never move: a longer answer joining later takes a free row (no reallocation, the live row's cache left
    where it is), a finished answer's row is taken by the next one, and each decodes what it decodes alone; an
    answer that no longer fits the capacity reallocates, keeping the live rows' caches."""
    from lit_block.serving import Generation, decode_batch
    from lit_block.serving.decode_batch import DecodeBatch

    monkeypatch.setattr(decode_batch, "COLUMN_QUANTUM", 16)  # capacities the tiny model's 256 positions can outgrow
    lm, builder = reference
    prompts = [builder.completion(q, [Document(d) for d in DOCS]) for q in (QUERY, QUERY + " the light Day")]
    config = sampling_config(6, 0.0, stop_at_eos=False)
    store, batch = BlockKVStore(), DecodeBatch(lm)
    a, b = (Generation(lm, blocks, query, config) for blocks, query in prompts)
    a.prefill(store)
    batch.step([a], [a.choose()])
    first_keys = batch.keys[:, 0, :, : a.position].clone()
    b.prefill(store)
    assert b.position > a.position  # longer than the live row

    def rows_stay(active):
        if a in active and b in active:
            assert batch.rows.index(a) == 0 and batch.rows.index(b) == 1
            assert torch.equal(batch.keys[:, 0, :, : first_keys.shape[2]], first_keys)  # the first row never moved

    decode_together(batch, [a, b], after_step=rows_stay)
    assert batch.rebuilds == 1  # the first answer's slab only: the longer one joined a free row
    for answer, (blocks, query) in zip((a, b), prompts):
        assert answer.token_ids == generate(lm, blocks, query, config).token_ids
    long_config = sampling_config(batch.keys.shape[3] - a.position + 8, 0.0, stop_at_eos=False)  # past the capacity
    c, d = Generation(lm, *prompts[0], config), Generation(lm, *prompts[1], long_config)
    c.prefill(store)
    batch.step([c], [c.choose()])
    d.prefill(store)
    batch.step([c, d], [c.choose(), d.choose()])
    assert batch.rebuilds == 2 and batch.keys.shape[3] >= d.position + long_config.max_new_tokens
    decode_together(batch, [c, d])
    for answer, (blocks, query), cfg in zip((c, d), prompts, (config, long_config)):
        assert answer.token_ids == generate(lm, blocks, query, cfg).token_ids  # c's cache survived the reallocation
    batch.free_rows()  # the server went idle: the next answer takes a row of the same slab
    e = Generation(lm, *prompts[1], config)
    e.prefill(store)
    decode_together(batch, [e])
    assert batch.rebuilds == 2 and e.token_ids == generate(lm, *prompts[1], config).token_ids


def test_start_up_errors_name_the_option(student_dir, capsys):
    from lit_block.cli import main

    assert main(["serve", str(student_dir), "--document-template", "{doc}"]) == 2
    assert "--document-template" in capsys.readouterr().err
    assert main(["serve", str(student_dir), "--checkpoint", str(student_dir / "missing.ckpt")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    assert main(["serve", str(student_dir), "--max-batch-requests", "0"]) == 2
    assert "--max-batch-requests must be positive, got 0" in capsys.readouterr().err
    assert main(["serve", str(student_dir), "--device", "cpu", "--decode-kernel", "split-key"]) == 2
    assert "--decode-kernel split-key: split-key is a Triton kernel for CUDA devices, not cpu" in capsys.readouterr().err


def test_a_chat_template_that_refuses_the_messages_is_a_400(student_dir, tmp_path):
    template = tmp_path / "alternating.jinja"
    template.write_text("{% if messages[0]['role'] != 'user' %}{{ raise_exception('start with the user') }}{% endif %}"
                        + CHAT_TEMPLATE)
    _, server, client = start(student_dir, "--chat-template", str(template))
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny", max_tokens=2, messages=[{"role": "assistant", "content": "Hi"}])
        assert caught.value.body["param"] == "messages" and "start with the user" in caught.value.body["message"]
        assert client.chat.completions.create(model="tiny", max_tokens=2, messages=USER).choices[0].finish_reason
    finally:
        server.stop()
