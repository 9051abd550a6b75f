"""ChatTokenizer, IncrementalDetokenizer (on the bundled model's tokenizer) and StopStringMatcher."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from engine_core.tokenizer import ChatTokenizer, IncrementalDetokenizer, StopStringMatcher

REPLACEMENT = "\ufffd"


@pytest.fixture(scope="module")
def tokenizer() -> ChatTokenizer:
    import transformers

    from engine_core.config import default_cache_dir
    from engine_core.models import bundled

    path = bundled.converted_dir(default_cache_dir())
    return ChatTokenizer(transformers.AutoTokenizer.from_pretrained(path))


def stream(tok: ChatTokenizer, ids: Sequence[int], prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True) -> tuple[list[str], str]:
    detok = IncrementalDetokenizer(tok, prompt_ids, skip_special_tokens=skip_special_tokens)
    pieces = [detok.add(i) for i in ids]
    return pieces, detok.flush()


EMOJI = "I love 🦀 and 👩‍👩‍👧!"
TEXTS = {
    "emoji": EMOJI,
    "cjk": "你好，世界。日本語のテキスト",
    "accents": "Café naïve façade — déjà vu",
    "mixed": "Mixed: naïve 🦀 Rust 和 中文, 1+1=2 — ✅ done.\n\nNew para 👍🏽 🇩🇪 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "spacing": "  leading spaces and\ttabs , odd ' spacing .",
}


# --- IncrementalDetokenizer ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TEXTS))
def test_streamed_text_equals_full_decode(tokenizer: ChatTokenizer, name: str) -> None:
    ids = tokenizer.encode(TEXTS[name])
    pieces, tail = stream(tokenizer, ids)
    assert "".join(pieces) + tail == tokenizer.decode(ids)
    assert tokenizer.decode(ids) == TEXTS[name]


@pytest.mark.parametrize("name", list(TEXTS))
def test_streamed_pieces_never_contain_replacement_char(tokenizer: ChatTokenizer, name: str) -> None:
    pieces, tail = stream(tokenizer, tokenizer.encode(TEXTS[name]))
    broken = [(i, p) for i, p in enumerate(pieces) if REPLACEMENT in p]
    assert not broken, f"pieces with U+FFFD: {broken}"
    assert REPLACEMENT not in tail


def test_emoji_text_really_splits_characters_across_tokens(tokenizer: ChatTokenizer) -> None:
    ids = tokenizer.encode(EMOJI)
    # Otherwise the replacement-char test above would prove nothing.
    assert any(REPLACEMENT in tokenizer.decode(ids[:n]) for n in range(1, len(ids)))
    pieces, _ = stream(tokenizer, ids)
    assert "" in pieces[:-1], "some token should complete no character and return ''"
    assert "🦀" in pieces or any("🦀" in p for p in pieces)


@pytest.mark.parametrize("name", list(TEXTS))
def test_streaming_after_a_chat_prompt(tokenizer: ChatTokenizer, name: str) -> None:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say something nice."}])
    ids = tokenizer.encode(TEXTS[name])
    pieces, tail = stream(tokenizer, ids, prompt_ids=prompt)
    assert "".join(pieces) + tail == tokenizer.decode(ids)
    assert not any(REPLACEMENT in p for p in pieces)


def test_streaming_after_a_plain_prompt_keeps_the_leading_space(tokenizer: ChatTokenizer) -> None:
    prompt = tokenizer.encode("The café said")
    ids = tokenizer.encode(" hello 🦀 world")
    pieces, tail = stream(tokenizer, ids, prompt_ids=prompt)
    assert "".join(pieces) + tail == " hello 🦀 world"
    assert pieces[0] == " hello"


def test_special_tokens_are_skipped_by_default(tokenizer: ChatTokenizer) -> None:
    eos = next(iter(tokenizer.eos_token_ids))
    ids = tokenizer.encode("Done 🦀.") + [eos]
    pieces, tail = stream(tokenizer, ids)
    assert "".join(pieces) + tail == tokenizer.decode(ids) == "Done 🦀."
    assert pieces[-1] == ""


def test_special_tokens_are_kept_when_asked(tokenizer: ChatTokenizer) -> None:
    eos = next(iter(tokenizer.eos_token_ids))
    ids = tokenizer.encode("Done 🦀.") + [eos]
    pieces, tail = stream(tokenizer, ids, skip_special_tokens=False)
    full = tokenizer.decode(ids, skip_special_tokens=False)
    assert "".join(pieces) + tail == full
    assert full.endswith("<|im_end|>")


def test_flush_returns_an_unfinished_character(tokenizer: ChatTokenizer) -> None:
    ids = tokenizer.encode(EMOJI)
    cut = next(n for n in range(1, len(ids)) if tokenizer.decode(ids[:n]).endswith(REPLACEMENT))
    pieces, tail = stream(tokenizer, ids[:cut])
    assert not any(REPLACEMENT in p for p in pieces)
    assert REPLACEMENT in tail
    assert "".join(pieces) + tail == tokenizer.decode(ids[:cut])


def test_flush_after_complete_text_is_empty(tokenizer: ChatTokenizer) -> None:
    _, tail = stream(tokenizer, tokenizer.encode("plain ascii text"))
    assert tail == ""


# --- ChatTokenizer ------------------------------------------------------------------------------


def test_chat_template_has_user_turn_and_ends_with_assistant_prompt(tokenizer: ChatTokenizer) -> None:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert all(isinstance(i, int) for i in ids)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert "<|im_start|>user\nHi<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert ids[-len(tokenizer.encode("<|im_start|>assistant\n")):] == tokenizer.encode("<|im_start|>assistant\n")
    # The markers are single special tokens, not spelled out in ordinary text pieces.
    assert tokenizer.hf.convert_tokens_to_ids("<|im_start|>") in ids
    assert "<|im_start|>" not in tokenizer.decode(ids)


def test_eos_token_ids_contain_im_end(tokenizer: ChatTokenizer) -> None:
    im_end = tokenizer.hf.convert_tokens_to_ids("<|im_end|>")
    assert isinstance(im_end, int) and im_end != tokenizer.hf.unk_token_id
    assert im_end in tokenizer.eos_token_ids


def test_eos_token_ids_include_generation_config_ids(tokenizer: ChatTokenizer) -> None:
    from transformers import GenerationConfig

    im_end = tokenizer.hf.convert_tokens_to_ids("<|im_end|>")
    merged = ChatTokenizer(tokenizer.hf, GenerationConfig(eos_token_id=[0, 7]))
    assert merged.eos_token_ids == frozenset({im_end, 0, 7})
    single = ChatTokenizer(tokenizer.hf, GenerationConfig(eos_token_id=5))
    assert single.eos_token_ids == frozenset({im_end, 5})


def test_encode_decode_round_trip_and_vocab_size(tokenizer: ChatTokenizer) -> None:
    text = TEXTS["mixed"]
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert max(ids) < tokenizer.vocab_size


@pytest.mark.parametrize("skip", [True, False])
def test_decode_gives_what_transformers_decode_gives(tokenizer: ChatTokenizer, skip: bool) -> None:
    # decode() may call the Rust tokenizer directly; its text must stay transformers' own, on
    # whole texts, on every slice a stream decodes (partial characters included) and around
    # special tokens.
    specials = [tokenizer.hf.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")]
    ids = tokenizer.encode(TEXTS["mixed"])
    pieces = [ids, ids[3:9], ids[:1], [], specials[:1] + ids[:5] + specials[1:], ids[-4:] + specials]
    pieces += [ids[i:i + 3] for i in range(0, len(ids), 2)]
    for piece in pieces:
        assert tokenizer.decode(piece, skip) == tokenizer.hf.decode(piece, skip_special_tokens=skip), piece


# --- StopStringMatcher --------------------------------------------------------------------------


def feed_all(matcher: StopStringMatcher, deltas: Sequence[str]) -> tuple[list[str], list[bool]]:
    results = [matcher.feed(d) for d in deltas]
    return [t for t, _ in results], [s for _, s in results]


def test_stop_string_split_across_feeds() -> None:
    matcher = StopStringMatcher(["</answer>"])
    texts, stopped = feed_all(matcher, ["The answer is 42", "</", "ans", "wer>", " trailing"])
    assert stopped == [False, False, False, True, True]
    assert "".join(texts) == "The answer is 42"
    for piece in texts:
        assert "<" not in piece and "/" not in piece and ">" not in piece
    assert texts[-1] == ""
    assert matcher.stopped
    assert matcher.flush() == ""


def test_stop_string_never_leaks_partially_before_it_is_complete() -> None:
    stop = "</answer>"
    matcher = StopStringMatcher([stop])
    emitted = ""
    for ch in "ok " + stop:
        text, _ = matcher.feed(ch)
        emitted += text
        # Nothing emitted may end with a non-empty prefix of the stop string.
        assert not any(emitted.endswith(stop[:n]) for n in range(1, len(stop) + 1)), emitted
    assert emitted == "ok "


def test_stop_string_inside_one_delta() -> None:
    matcher = StopStringMatcher(["</answer>"])
    assert matcher.feed("abc</answer>def") == ("abc", True)
    assert matcher.feed("more") == ("", True)


def test_stop_string_at_the_very_start() -> None:
    matcher = StopStringMatcher(["STOP"])
    texts, stopped = feed_all(matcher, ["ST", "OP", "x"])
    assert texts == ["", "", ""] and stopped == [False, True, True]


def test_lookalike_prefix_is_emitted_as_soon_as_it_cannot_be_a_stop() -> None:
    matcher = StopStringMatcher(["</answer>"])
    texts, stopped = feed_all(matcher, ["</", "b", "old>"])
    assert stopped == [False, False, False]
    assert texts == ["", "</b", "old>"]  # "</" might start "</answer>"; "</b" cannot
    assert matcher.flush() == ""
    assert not matcher.stopped


def test_lookalike_prefix_is_emitted_once_disambiguated_by_more_text() -> None:
    matcher = StopStringMatcher(["</answer>"])
    texts, stopped = feed_all(matcher, ["</b", "old>", " is a tag, not the end"])
    assert not any(stopped)
    # Once more than len(stop) - 1 characters follow, the look-alike is safe and must be out.
    assert "".join(texts).startswith("</bold>")
    assert "".join(texts) + matcher.flush() == "</bold> is a tag, not the end"


@pytest.mark.parametrize("stops", [["STOP", "END"], ["END", "STOP"]])
def test_multiple_stop_strings_pick_the_earliest(stops: list[str]) -> None:
    matcher = StopStringMatcher(stops)
    assert matcher.feed("xx END yy STOP zz") == ("xx ", True)

    matcher = StopStringMatcher(stops)
    texts, stopped = feed_all(matcher, ["foo S", "TO", "P bar END"])
    assert "".join(texts) == "foo " and stopped == [False, False, True]


def test_overlapping_stop_strings_of_different_lengths() -> None:
    matcher = StopStringMatcher(["world", "lo w"])
    assert matcher.feed("hello world") == ("hel", True)


def test_flush_returns_held_back_tail_when_not_stopped() -> None:
    matcher = StopStringMatcher(["#####"])
    texts, stopped = feed_all(matcher, ["abc", "defg", "h#"])
    assert not any(stopped)
    emitted = "".join(texts)
    assert len(emitted) < len("abcdefgh#"), "the tail should have been held back"
    assert emitted + matcher.flush() == "abcdefgh#"
    assert matcher.flush() == ""


def test_flush_after_stop_is_empty() -> None:
    matcher = StopStringMatcher(["<"])
    assert matcher.feed("a<b") == ("a", True)
    assert matcher.flush() == ""


@pytest.mark.parametrize("stops", [[], [""]])
def test_no_stops_is_passthrough(stops: list[str]) -> None:
    matcher = StopStringMatcher(stops)
    for delta in ["Hello", " </answer>", "", "🦀"]:
        assert matcher.feed(delta) == (delta, False)
    assert matcher.flush() == ""
    assert not matcher.stopped


def test_random_chunking_matches_a_find_on_the_whole_text() -> None:
    rng = random.Random(1234)
    stops = ["</answer>", "\n\nUser:", "STOP"]
    alphabet = list("ab </>answerUSTOP:\n🦀é") + ["</answ", "\n\nUse"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        expected = text[:min(hits)] if hits else text
        matcher = StopStringMatcher(stops)
        emitted, pos = "", 0
        while pos < len(text):
            step = rng.randint(1, 6)
            piece, stopped = matcher.feed(text[pos:pos + step])
            emitted += piece
            pos += step
            assert not any(s in emitted for s in stops)
            if stopped:
                break
        emitted += matcher.flush()
        assert emitted == expected, (text, emitted)
        assert matcher.stopped == bool(hits)


def test_detokenizer_feeding_stop_matcher(tokenizer: ChatTokenizer) -> None:
    ids = tokenizer.encode("Answer: 🦀 done</answer> and then more")
    detok = IncrementalDetokenizer(tokenizer)
    matcher = StopStringMatcher(["</answer>"])
    out = ""
    for token in ids:
        text, stopped = matcher.feed(detok.add(token))
        out += text
        if stopped:
            break
    else:
        out += matcher.feed(detok.flush())[0] + matcher.flush()
    assert matcher.stopped
    assert out == "Answer: 🦀 done"
