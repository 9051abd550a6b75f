"""Text in and out: chat templates, streaming detokenization, stop strings.

Streaming text one token at a time is subtle for two reasons:

* A character can span several tokens (an emoji is 4 UTF-8 bytes, often 2-4 byte-level
  tokens). Decoding a prefix of them gives U+FFFD, the replacement character. We hold text
  back until the decode no longer ends in U+FFFD, so a client never sees broken characters.
* A stop string can span several tokens ("</answer>" may arrive as "</", "answer", ">"), and
  must not be shown to the client. We hold back the end of the text while it could be the
  start of a stop string, and release it as soon as it cannot.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from transformers import GenerationConfig, PreTrainedTokenizerBase

_REPLACEMENT = "\ufffd"
# Decoding restarts a few tokens back so that tokenizers which drop a leading space on the
# first token of a decode (SentencePiece-style) still get spaces right.
_CONTEXT_TOKENS = 5


class ChatTokenizer:
    """A transformers tokenizer plus what serving needs from it."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, generation_config: GenerationConfig | None = None):
        self.hf = tokenizer
        self.eos_token_ids = _eos_ids(tokenizer, generation_config)
        # A stream decodes twice per token. When transformers would return the Rust tokenizer's
        # text unchanged (no space clean-up), calling it directly skips a dozen Python frames a call.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        cleans_up = getattr(tokenizer, "clean_up_tokenization_spaces", True)
        self._rust_decode = backend.decode if backend is not None and not cleans_up else None

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The most characters of text one token stands for (its vocabulary string's length:
        a byte-level token's characters are bytes, a SentencePiece token's are characters)."""
        return max(len(token) for token in self.hf.get_vocab())

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        if self._rust_decode is not None:
            return self._rust_decode(list(ids), skip_special_tokens=skip_special_tokens)
        return str(self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def apply_chat_template(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> list[int]:
        """Token ids of a conversation, ending with the assistant's turn prompt."""
        if not self.hf.chat_template:
            raise ValueError("this model has no chat template; use the completions endpoint with a plain prompt")
        text = self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
        return self.encode(str(text))


def _eos_ids(tokenizer: PreTrainedTokenizerBase, generation_config: GenerationConfig | None) -> frozenset[int]:
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, Iterable):
            ids.update(int(i) for i in source)
    return frozenset(ids)


class IncrementalDetokenizer:
    """Turns a stream of token ids into a stream of complete text pieces.

    ``add(token)`` returns the new text that the token completes (possibly ""); ``flush()``
    returns whatever is still held back once the stream ends. The concatenation of everything
    returned equals ``decode(all tokens)``.
    """

    def __init__(self, tokenizer: ChatTokenizer, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        context = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._ids = context
        self._prefix_offset = 0  # decode from here, so spacing matches a full decode
        self._read_offset = len(context)  # text of ids before this has been returned

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        decode = self._tokenizer.decode
        prefix = decode(self._ids[self._prefix_offset:self._read_offset], self._skip)
        full = decode(self._ids[self._prefix_offset:], self._skip)
        if len(full) <= len(prefix) or (full.endswith(_REPLACEMENT) and not final):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return full[len(prefix):]


class StopStringMatcher:
    """Finds stop strings in streamed text and holds back text that could start one.

    ``feed(delta)`` returns ``(text safe to emit, stopped)``. Once stopped, the emitted text ends
    just before the stop string and later calls return ``("", True)``.
    """

    def __init__(self, stops: Sequence[str]):
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, delta: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self._stops:
            return delta, False
        self._pending += delta
        cut = min((i for i in (self._pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            text, self._pending = self._pending[:cut], ""
            return text, True
        keep = len(self._pending) - self._partial_stop_length(self._pending)
        text, self._pending = self._pending[:keep], self._pending[keep:]
        return text, False

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest end of ``text`` that is the start of some stop string."""
        for length in range(min(self._hold, len(text)), 0, -1):
            if any(stop.startswith(text[-length:]) for stop in self._stops):
                return length
        return 0

    def flush(self) -> str:
        """The held-back tail, once generation ended for another reason."""
        text, self._pending = ("" if self.stopped else self._pending), ""
        return text
