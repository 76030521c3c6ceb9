"""The generation loop: stopping, the prompt cache, interruption, streaming text."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoints import tiny_tokenizer
from fs_mlx.generation.detokenizer import StreamingDetokenizer
from fs_mlx.errors import FsxError
from fs_mlx.generation.generate import PromptCache, generate, split_stop, stream_generate
from fs_mlx.loader import load
from fs_mlx.formats.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return load(tiny_dir)


def greedy(lm, prompt, n=24, **kw):
    return generate(lm, prompt, max_tokens=n, ignore_eos=True, **kw)


def test_max_tokens_and_text(lm):
    text, ids, last = greedy(lm, [5, 6, 7], n=12)
    assert len(ids) == 12 and last.finish_reason == "length"
    assert text == lm.tokenizer.decode(ids)  # streamed pieces add up to the whole
    assert last.stats.generation_tokens == 12 and last.stats.prompt_tokens == 3


def test_eos_stops_before_the_eos_token(lm):
    _, ids, _ = greedy(lm, [5, 6, 7])
    stop_id = ids[5]
    first = ids.index(stop_id)
    lm.tokenizer.eos_token_ids, saved = [stop_id], lm.tokenizer.eos_token_ids
    try:
        _, got, last = generate(lm, [5, 6, 7], max_tokens=24)
    finally:
        lm.tokenizer.eos_token_ids = saved
    assert got == ids[:first] and last.finish_reason == "eos"


def test_stop_string(lm):
    text, _, _ = greedy(lm, [9, 10, 11])
    # A stop string of real characters from the middle of the greedy reply.
    start = next(i for i in range(1, len(text) - 2) if "\ufffd" not in text[i:i + 2])
    stop = text[start:start + 2]
    got, _, last = greedy(lm, [9, 10, 11], stop=(stop,))
    assert got == text[: text.index(stop)] and last.finish_reason == "stop"


def byte_char(b: int) -> str:
    """GPT-2's bytes_to_unicode: printable bytes stand for themselves, others move to 256+."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    if b in printable:
        return chr(b)
    return chr(256 + [x for x in range(256) if x not in printable].index(b))


def test_invalid_bytes_do_not_stall_the_stream(lm):
    detok = StreamingDetokenizer(lm.tokenizer)
    # Byte-level BPE spells byte b as a printable character; 0x80.. are UTF-8 continuation
    # bytes, invalid on their own.
    lone_continuation_bytes = [lm.tokenizer.token_to_id(byte_char(b)) for b in range(0x80, 0x85)]
    pieces = [detok.add(i) for i in lone_continuation_bytes]
    assert pieces[:3] == ["", "", ""] and "\ufffd" in pieces[3]  # given up on after 4 tokens


def test_split_stop_holds_back_possible_prefixes():
    assert split_stop("hello wo", ("world",)) == ("hello ", "wo", False)
    assert split_stop("hello world!", ("world",)) == ("hello ", "", True)
    assert split_stop("abc", ()) == ("abc", "", False)


def test_prompt_cache_reuse_gives_the_same_reply(lm):
    first = [1, 2, 3, 4, 5, 6]
    cache = PromptCache(lm.model)
    _, reply, r1 = greedy(lm, first, n=8, cache=cache)
    assert r1.stats.cached_tokens == 0
    # The next turn extends the conversation: everything already computed is reused.
    second = first + reply + [7, 8]
    _, cached_reply, r2 = greedy(lm, second, n=8, cache=cache)
    assert r2.stats.cached_tokens == len(first) + len(reply)
    assert r2.stats.prompt_tokens == 2
    _, fresh_reply, _ = greedy(lm, second, n=8)
    assert cached_reply == fresh_reply


def test_interrupted_reply_leaves_a_consistent_cache(lm):
    prompt = [3, 1, 4, 1, 5]
    cache = PromptCache(lm.model)
    stream = stream_generate(lm, prompt, max_tokens=50, ignore_eos=True, cache=cache)
    got = [next(stream).token for _ in range(4)]
    stream.close()  # what the chat does on Ctrl-C
    assert cache.tokens == (prompt + got)[: cache.offset]
    assert all(c.offset == cache.offset for c in cache.layers)
    _, resumed, _ = greedy(lm, prompt + got, n=6, cache=cache)
    _, fresh, _ = greedy(lm, prompt + got, n=6)
    assert resumed == fresh


def test_prompt_longer_than_context(lm):
    with pytest.raises(FsxError, match="the prompt has 10 tokens; the context holds 8"):
        generate(lm, list(range(10)), context=8)
    _, ids, last = generate(lm, list(range(6)), context=8, max_tokens=100, ignore_eos=True)
    assert len(ids) == 2 and last.finish_reason == "length"  # stops when the context is full


@pytest.fixture(scope="module")
def byte_level():
    return Tokenizer(tiny_tokenizer())


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_streaming_detokenizer_adds_up(byte_level, text):
    ids = byte_level.encode(text)
    detok = StreamingDetokenizer(byte_level)
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == byte_level.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)  # never half a character


def test_emoji_split_across_tokens_is_held_back(byte_level):
    ids = byte_level.encode("a🙂")  # the emoji is 4 bytes, several tokens in a tiny vocabulary
    assert len(ids) > 2
    detok = StreamingDetokenizer(byte_level)
    pieces = [detok.add(i) for i in ids]
    assert pieces[0] == "a" and pieces[-1] == "🙂" and set(pieces[1:-1]) == {""}
