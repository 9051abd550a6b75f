"""Token counts for the penalties, kept per request on the logits' device between steps.

Repetition, frequency and presence penalties need, for each row, how often each token id
appears in the request's output and whether it appears in its prompt. Rebuilding that from
the token lists at every step costs host time in proportion to the whole sequence; keeping it
per request costs one small update per new token:

    step 1   request r, output [a b]           kept[r] += {a, b}          counted = 2
    step 2   request r, output [a b c]         kept[r] += {c}             counted = 3
    verify   rows of r: [a b c] and [a b c d]  the shortest row is what r has generated;
             d is a draft token: it is added to that row's copy, never to kept[r]

Rows without a ``request_id`` (offline ``Engine.generate``, tests) are counted from their lists.
The serving loop calls :meth:`PenaltyCounts.forget` when a request finishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from .transfer import to_device


class CountedRow(Protocol):
    @property
    def request_id(self) -> str | None: ...
    @property
    def prompt_ids(self) -> Sequence[int]: ...
    @property
    def output_ids(self) -> Sequence[int]: ...


class PenaltyCounts:
    """Per-request output counts and prompt masks, one row of two tensors per request.

        slot:        0 (always empty)   1            2     ...
        output       [0 0 0 ...]        [counts r1]  [counts r2]      float [capacity, vocab]
        in_prompt    [F F F ...]        [mask r1]    [mask r2]        bool  [capacity, vocab]

    A step updates every request at once (one scatter of all new tokens), whatever the batch.
    """

    def __init__(self) -> None:
        self._slot: dict[str, int] = {}
        self._counted: list[int] = [0]  # per slot: output tokens in its row; slot 0 is never handed out
        self._free: list[int] = []
        self._output: torch.Tensor | None = None
        self._in_prompt: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self._slot)

    def forget(self, request_id: str) -> None:
        slot = self._slot.pop(request_id, None)
        if slot is not None:
            self._free.append(slot)

    def for_rows(
        self, rows: Sequence[CountedRow], vocab: int, device: torch.device, wanted: Sequence[bool] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``([rows, vocab]`` output counts, ``[rows, vocab]`` in-prompt mask) of each row.

        wanted: rows whose counts matter (those with penalties); the others get zeros.
        """
        wanted = [True] * len(rows) if wanted is None else wanted
        if not any(row.request_id is not None and w for row, w in zip(rows, wanted)):
            return counts_from_lists(rows, vocab, device, wanted)
        # A request's shortest row is what it has generated; longer rows add draft tokens.
        generated: dict[str, tuple[int, CountedRow]] = {}
        for row, w in zip(rows, wanted):
            if w and row.request_id is not None:
                n = len(row.output_ids)
                if row.request_id not in generated or n < generated[row.request_id][0]:
                    generated[row.request_id] = (n, row)
        restarted, new_slots, new_tokens = self._advance(generated)
        output, in_prompt = self._tensors(vocab, device)
        if restarted:
            index = _long([slot for slot, _ in restarted], device)
            output.index_fill_(0, index, 0.0)
            in_prompt[index] = token_counts([ids for _, ids in restarted], vocab, device) > 0
        if new_tokens:
            output.index_put_((_long(new_slots, device), _long(new_tokens, device)),
                              torch.ones(len(new_tokens), device=device), accumulate=True)
        slots = [self._slot[row.request_id] if w and row.request_id is not None else 0 for row, w in zip(rows, wanted)]
        index = _long(slots, device)
        row_output, row_in_prompt = output[index], in_prompt[index]
        # Tokens the kept rows do not hold: draft tokens, and every token of a row without an id.
        extra_rows: list[int] = []
        extra_tokens: list[int] = []
        prompt_rows: list[int] = []
        prompt_tokens: list[int] = []
        for i, (row, w) in enumerate(zip(rows, wanted)):
            if not w:
                continue
            if row.request_id is None:
                extra = row.output_ids
                prompt_rows += [i] * len(row.prompt_ids)
                prompt_tokens += row.prompt_ids
            else:
                extra = row.output_ids[generated[row.request_id][0]:]
            extra_rows += [i] * len(extra)
            extra_tokens += extra
        if extra_tokens:
            row_output.index_put_((_long(extra_rows, device), _long(extra_tokens, device)),
                                  torch.ones(len(extra_tokens), device=device), accumulate=True)
        if prompt_tokens:
            row_in_prompt[_long(prompt_rows, device), _long(prompt_tokens, device)] = True
        return row_output, row_in_prompt

    def _advance(
        self, generated: dict[str, tuple[int, CountedRow]],
    ) -> tuple[list[tuple[int, Sequence[int]]], list[int], list[int]]:
        """Host bookkeeping: (slots to start over with their prompts, new tokens' slots, new tokens)."""
        restarted: list[tuple[int, Sequence[int]]] = []
        new_slots: list[int] = []
        new_tokens: list[int] = []
        for request_id, (n, row) in generated.items():
            slot = self._slot.get(request_id)
            if slot is None or self._counted[slot] > n:  # a new request, or a reused id: start over
                if slot is None:
                    slot = self._free.pop() if self._free else len(self._counted)
                    if slot == len(self._counted):
                        self._counted.append(0)
                    self._slot[request_id] = slot
                self._counted[slot] = 0
                restarted.append((slot, row.prompt_ids))
            new = row.output_ids[self._counted[slot]:n]
            new_slots += [slot] * len(new)
            new_tokens += new
            self._counted[slot] = n
        return restarted, new_slots, new_tokens

    def _tensors(self, vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The two tables, grown (doubling) to hold every slot handed out."""
        if self._output is None or self._output.shape[1] != vocab or self._output.device != device:
            self._output = torch.zeros(0, vocab, device=device)
            self._in_prompt = torch.zeros(0, vocab, dtype=torch.bool, device=device)
        assert self._in_prompt is not None
        have, need = self._output.shape[0], len(self._counted)
        if need > have:
            grow = max(need, 2 * have) - have
            self._output = torch.cat([self._output, self._output.new_zeros(grow, vocab)])
            self._in_prompt = torch.cat([self._in_prompt, self._in_prompt.new_zeros(grow, vocab)])
        return self._output, self._in_prompt


def _long(values: Sequence[int], device: torch.device) -> torch.Tensor:
    return to_device(list(values), torch.long, device)


def counts_from_lists(
    rows: Sequence[CountedRow], vocab: int, device: torch.device, wanted: Sequence[bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same two tables as :meth:`PenaltyCounts.for_rows`, counted from each row's lists."""
    wanted = [True] * len(rows) if wanted is None else wanted
    return (token_counts([row.output_ids if w else () for row, w in zip(rows, wanted)], vocab, device),
            token_counts([row.prompt_ids if w else () for row, w in zip(rows, wanted)], vocab, device) > 0)


def token_counts(id_lists: Sequence[Sequence[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """``[rows, vocab]`` float counts of each token id per row (padding goes to a spare column)."""
    width = max((len(ids) for ids in id_lists), default=0)
    padded = torch.full((len(id_lists), max(width, 1)), vocab, dtype=torch.long, pin_memory=device.type == "cuda")
    for row, ids in enumerate(id_lists):
        padded[row, :len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    counts = torch.zeros(len(id_lists), vocab + 1, device=device)
    counts.scatter_add_(1, padded.to(device, non_blocking=True), torch.ones(padded.shape, device=device))
    return counts[:, :vocab]
