"""`fsx serve`: a live server on 127.0.0.1, driven by the official `openai` client.

The oracle for every generated text is fsx's own single-sequence path
(`generate`, itself checked against transformers' goldens in test_golden.py):
what the server answers a request inside a batch must equal, token for token,
what that request gets alone. The shapes are checked by the official client
parsing them (it raises on anything it cannot read) plus explicit field checks.
Budget: ~20 s on 2 cores (the tiny golden checkpoints decode in ~1 ms/token).
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from serving import GOLDEN, MODEL_ID, Http, alone, chat_ids, live_server

from fs_mlx import load
from fs_mlx.generation.batch import Request, Scheduler


@pytest.fixture(scope="module")
def lm():
    return load(GOLDEN / "qwen3-tiny", kernels="mlx")


@pytest.fixture(scope="module")
def server(lm):
    # Small prefill chunks so that prompts are prefilled over several steps, interleaved with decoding.
    with live_server(lm, max_batch=4, max_queue=16, prefill_chunk=8, default_max_tokens=64) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", timeout=30, max_retries=0)


QUESTIONS = ["Hello there, how are you today?", "a",
             "The quick brown fox jumps over the lazy dog. " * 6, "Count: one two three four five"]


# --- endpoints and shapes -----------------------------------------------------------------

def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    health = Http(server[0]).request("GET", "/health")[2]
    assert health["status"] == "ok" and health["max_batch"] == 4


def test_chat_non_streaming_equals_generate(lm, client):
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    ids = chat_ids(lm, messages)
    text, tokens, finish = alone(lm, ids, 20)
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=20, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text
    assert r.choices[0].finish_reason == {"eos": "stop", "length": "length"}[finish]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), len(tokens))
    assert r.usage.total_tokens == len(ids) + len(tokens)


def test_chat_streaming_chunks_and_usage(lm, client):
    messages = [{"role": "user", "content": QUESTIONS[3]}]
    ids = chat_ids(lm, messages)
    text, tokens, _ = alone(lm, ids, 16)
    chunks = list(client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=16,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(tokens)
    assert all(c.usage is None for c in chunks[:-1])  # include_usage: null on all but the last


def test_completions_text_and_token_ids(lm, client):
    ids = lm.tokenizer.encode("Once upon a time")
    text, tokens, _ = alone(lm, ids, 12)
    r = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text == text
    r2 = client.completions.create(model=MODEL_ID, prompt=ids, max_tokens=12, temperature=0)
    assert r2.choices[0].text == text
    streamed = client.completions.create(model=MODEL_ID, prompt=ids, max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text


def test_stop_strings_logprobs_and_seed(lm, client):
    ids = lm.tokenizer.encode("Once upon a time")
    text, _, _ = alone(lm, ids, 24, ignore_eos=True)
    stop = text[len(text) // 2:len(text) // 2 + 3]
    r = client.completions.create(model=MODEL_ID, prompt=ids, max_tokens=24, temperature=0,
                                  stop=[stop], extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == text[:text.find(stop)]

    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:  # greedy: the chosen token is the most likely one
        assert len(entry.top_logprobs) == 3 and entry.logprob <= 0
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-6)

    def sampled(seed):
        return client.completions.create(model=MODEL_ID, prompt=ids, max_tokens=16, temperature=1.0,
                                         seed=seed, extra_body={"ignore_eos": True}).choices[0].text
    with ThreadPoolExecutor(3) as pool:  # concurrently: each request draws from its own generator
        a, b, c = pool.map(sampled, [7, 7, 8])
    assert a == b and a != c


# --- batching --------------------------------------------------------------------------------

def test_batching_invariance_over_http(lm, server, client):
    """Four different prompts at once: each answer equals the same request alone."""
    messages = [[{"role": "user", "content": q}] for q in QUESTIONS]
    expected = [alone(lm, chat_ids(lm, m), 40, ignore_eos=True)[0] for m in messages]
    server[1].peak_rows = 0

    def ask(m):
        stream = client.chat.completions.create(model=MODEL_ID, messages=m, max_tokens=40, temperature=0,
                                                stream=True, extra_body={"ignore_eos": True})
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(ask, messages))
    assert got == expected
    assert server[1].peak_rows >= 2, "the requests were never decoded together"


@pytest.mark.parametrize("checkpoint", ["qwen3-tiny", "llama-tiny", "mistral-tiny", "gemma3-tiny"])
def test_batching_invariance_token_for_token(checkpoint):
    """The scheduler alone (no HTTP): prompts of different lengths joining a running
    batch at different steps; every sequence's greedy tokens equal its tokens alone
    (CPU, float32: exactly). mistral-tiny and gemma3-tiny: sliding windows of 8, per-row
    window masks in the batch."""
    lm = load(GOLDEN / checkpoint, kernels="mlx")
    prompts = [lm.tokenizer.encode(q) for q in QUESTIONS] + [list(range(3, 40))]
    expected = [alone(lm, p, 30, ignore_eos=True)[1] for p in prompts]
    scheduler = Scheduler(lm, max_batch=3, prefill_chunk=5, prefix_cache_bytes=0)
    got = [[] for _ in prompts]
    for i, p in enumerate(prompts):  # each arrives four steps after the one before
        scheduler.submit(Request(p, 30, ignore_eos=True),
                         lambda e, i=i: got[i].append(e.token) if e.token is not None else None)
        for _ in range(4):
            scheduler.step()
    while scheduler.waiting or scheduler.prefilling or scheduler.rows:
        scheduler.step()
    assert got == expected
    assert scheduler.peak_rows == 3


def test_prefix_cache_reuses_a_shared_system_prompt(lm, client):
    system = {"role": "system", "content": "You are a terse assistant. " * 8}
    first = [system, {"role": "user", "content": "Name a color."}]
    second = [system, {"role": "user", "content": "Name a fruit."}]
    expected = alone(lm, chat_ids(lm, second), 10)[0]
    client.chat.completions.create(model=MODEL_ID, messages=first, max_tokens=10, temperature=0)
    r = client.chat.completions.create(model=MODEL_ID, messages=second, max_tokens=10, temperature=0)
    shared = next(i for i, (a, b) in enumerate(zip(chat_ids(lm, first), chat_ids(lm, second))) if a != b)
    assert r.usage.prompt_tokens_details.cached_tokens == shared
    assert r.choices[0].message.content == expected  # reused keys give the same answer


# --- disconnects, limits, bad requests ----------------------------------------------------------

def wait_for(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_disconnect_frees_the_sequence(server, client):
    url, scheduler = server
    body = {"model": MODEL_ID, "prompt": "Once", "max_tokens": 3000, "stream": True, "ignore_eos": True}
    with Http(url).stream("/v1/completions", body) as (status, next_event):
        assert status == 200 and next_event().startswith("data:")
        assert wait_for(lambda: scheduler.rows)  # it joined the batch
    # the connection is closed: the sequence must leave the batch long before its 3000 tokens
    assert wait_for(lambda: not scheduler.rows and not scheduler.prefilling)
    r = client.completions.create(model=MODEL_ID, prompt="Once", max_tokens=4, temperature=0)
    assert r.usage.completion_tokens >= 1  # and everyone else is still served


def test_disconnect_while_waiting_for_a_whole_reply(server):
    """Non-streaming: the handler notices the closed connection while it waits."""
    url, scheduler = server
    body = {"model": MODEL_ID, "prompt": "Once", "max_tokens": 3000, "ignore_eos": True}
    conn = http.client.HTTPConnection(*url.removeprefix("http://").split(":"), timeout=30)
    conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    assert wait_for(lambda: scheduler.rows)
    conn.sock.close()
    assert wait_for(lambda: not scheduler.rows and not scheduler.prefilling)


def test_over_capacity_gets_429_with_retry_after(lm):
    with live_server(lm, max_batch=1, max_queue=1, default_max_tokens=8) as (url, scheduler):
        http_ = Http(url)
        long = {"model": MODEL_ID, "prompt": "Once", "max_tokens": 4000, "stream": True, "ignore_eos": True}
        with http_.stream("/v1/completions", long) as (status, next_event):
            assert status == 200 and next_event()
            with http_.stream("/v1/completions", long) as (queued, _):
                assert queued == 200 and wait_for(lambda: len(scheduler.waiting) == 1)
                status, headers, body = http_.request("POST", "/v1/completions", {**long, "stream": False})
                assert status == 429 and headers["Retry-After"] == "1"
                assert body["error"]["code"] == "rate_limit_exceeded"
        assert wait_for(lambda: not (scheduler.rows or scheduler.waiting or scheduler.prefilling))
        status, _, body = http_.request("POST", "/v1/completions",
                                        {"model": MODEL_ID, "prompt": "Once", "max_tokens": 3})
        assert status == 200 and body["usage"]["completion_tokens"] >= 1


BAD = [
    ("{not json", 400, None),
    ("[1, 2]", 400, None),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), 400, "model"),
    (json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}), 404, "model"),
    (json.dumps({"model": MODEL_ID}), 400, "messages"),
    (json.dumps({"model": MODEL_ID, "messages": "hi"}), 400, "messages"),
    (json.dumps({"model": MODEL_ID, "messages": [{"content": "hi"}]}), 400, "messages"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": 5}]}), 400, "messages"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"}),
     400, "max_tokens"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
     400, "max_tokens"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}),
     400, "max_tokens"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "temperature": -1}),
     400, "temperature"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "top_p": 0}),
     400, "top_p"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
     400, "stream"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "stop": [1]}),
     400, "stop"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "n": 2}), 400, "n"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 5,
                 "logprobs": True, "seed": 1.5}), 400, "seed"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "seed": -1}), 400, "seed"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "seed": 2**70}),
     400, "seed"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}],
                 "chat_template_kwargs": {"messages": []}}), 400, "chat_template_kwargs"),
    (json.dumps({"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}],
                 "chat_template_kwargs": []}), 400, "chat_template_kwargs"),
]


@pytest.mark.parametrize("body,status,param", BAD)
def test_bad_requests_get_openai_errors(server, body, status, param):
    got, _, reply = Http(server[0]).request("POST", "/v1/chat/completions", body)
    assert got == status, reply
    error = reply["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and error["param"] == param


def test_errors_through_the_client_and_the_server_keeps_serving(lm, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    long_prompt = [5 + i % 900 for i in range(4100)]  # over the 4096-token context
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model=MODEL_ID, prompt=long_prompt, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="token ids must be in 0.."):
        client.completions.create(model=MODEL_ID, prompt=[1, 5000], max_tokens=4)
    status, _, body = Http(str(client.base_url).split("/v1")[0]).request("GET", "/nowhere")
    assert status == 404 and "error" in body
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.choices[0].finish_reason in ("stop", "length")
