"""Checks of a scheduler's plans, with messages that say what the scheduler did wrong.

The loop runs these around every step when ``check_invariants`` is on. They cost a few
microseconds per sequence, so they stay on by default on CPU.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from pathlib import Path

from .block_allocator import BlockAllocator
from .scheduler import ScheduledSeq, SchedulerContext
from .sequence import Sequence


class SchedulerInvariantError(RuntimeError):
    """A scheduler broke the contract; the message explains how."""


def check_plan(
    plan: list[ScheduledSeq], ctx: SchedulerContext, *, live: Iterable[Sequence] = (), held: Iterable[int] = ()
) -> None:
    """Everything a step needs before it may run: each sequence once, budgets, block coverage,
    and no write into a shared block.

    ``live`` (the sequences in flight) and ``held`` (``held_blocks()``) are read only to name
    who else holds a block that a step would write into.
    """
    seen: set[int] = set()
    total = 0
    if len(plan) > ctx.max_num_seqs:
        raise SchedulerInvariantError(
            f"schedule() returned {len(plan)} sequences; at most max_num_seqs={ctx.max_num_seqs} may run in a step"
        )
    for entry in plan:
        seq = entry.seq
        name = f"sequence {seq.request_id!r}"
        if id(seq) in seen:
            raise SchedulerInvariantError(f"{name} was scheduled twice in one step")
        seen.add(id(seq))
        if seq.is_finished:
            raise SchedulerInvariantError(f"{name} is finished ({seq.finish_reason}) but was scheduled again")
        if not 1 <= entry.num_tokens <= seq.num_uncomputed_tokens:
            raise SchedulerInvariantError(
                f"{name} was scheduled for {entry.num_tokens} tokens but has {seq.num_uncomputed_tokens} "
                "uncomputed; schedule between 1 and that many"
            )
        if entry.draft_tokens and entry.num_tokens != seq.num_uncomputed_tokens:
            raise SchedulerInvariantError(f"{name} has draft tokens, which may only follow its last uncomputed token")
        total += entry.num_tokens + len(entry.draft_tokens)
        end = seq.num_computed_tokens + entry.num_tokens + len(entry.draft_tokens)
        if end > ctx.max_model_len:
            raise SchedulerInvariantError(f"{name} would reach {end} tokens, beyond max_model_len={ctx.max_model_len}")
        _check_block_table(name, seq.block_table, end, ctx)
        _check_writes_unshared(entry, end, ctx, live, held)
    if total > ctx.max_num_batched_tokens:
        raise SchedulerInvariantError(
            f"the step has {total} tokens, over the budget max_num_batched_tokens={ctx.max_num_batched_tokens}"
        )


def _check_block_table(name: str, table: list[int], end: int, ctx: SchedulerContext) -> None:
    needed = ctx.blocks_needed(end)
    if len(table) < needed:
        raise SchedulerInvariantError(
            f"{name} writes KV up to position {end - 1}, which needs {needed} blocks of {ctx.block_size}, "
            f"but its block_table has {len(table)}: allocate blocks before scheduling it"
        )
    if ctx.allocator.all_allocated(table):
        return
    for block in table:
        valid = isinstance(block, int) and 0 <= block < ctx.allocator.num_blocks
        if not valid or ctx.allocator.ref_count(block) == 0:
            raise SchedulerInvariantError(f"{name} has block {block!r} in its block_table, which is not allocated")


def _check_writes_unshared(
    entry: ScheduledSeq, end: int, ctx: SchedulerContext, live: Iterable[Sequence], held: Iterable[int]
) -> None:
    """Each block a step writes KV into must have no other holder.

    A shared block holds KV that another sequence (or the prefix cache) reads as its own:
    writing into it would silently change that sequence's output.
    """
    seq = entry.seq
    start = seq.num_computed_tokens
    first, last = start // ctx.block_size, (end - 1) // ctx.block_size
    for index in range(first, last + 1):
        block = seq.block_table[index]
        refs = ctx.allocator.ref_count(block)
        if refs != 1:
            lo = max(start, index * ctx.block_size)
            hi = min(end, (index + 1) * ctx.block_size) - 1
            raise SchedulerInvariantError(
                f"sequence {seq.request_id!r} writes KV at positions {lo}..{hi} into block {block} (entry {index} "
                f"of its block_table), which has {refs} holders: it is shared with "
                f"{_other_holder(seq, block, live, held)}; a step may write only into blocks its sequence holds "
                "alone (share only full blocks before num_computed_tokens, give it a fresh block for the rest)"
            )


def _other_holder(seq: Sequence, block: int, live: Iterable[Sequence], held: Iterable[int]) -> str:
    for other in live:
        if other is not seq and block in other.block_table:
            return f"sequence {other.request_id!r}"
    if block in held:
        return "the scheduler's cache (held_blocks())"
    if seq.block_table.count(block) > 1:
        return "itself (its block_table lists it more than once)"
    return "a holder that no live block_table or held_blocks() accounts for"


def check_no_leaks(allocator: BlockAllocator, live: Iterable[Sequence], held: list[int]) -> None:
    """Every reference the allocator counts must sit in a live block table or the scheduler's cache."""
    in_tables = sum(len(seq.block_table) for seq in live)
    if allocator.total_refs != in_tables + len(held):
        raise SchedulerInvariantError(
            f"KV blocks leaked or lost: the allocator counts {allocator.total_refs} block references, but live "
            f"sequences' block tables hold {in_tables} and held_blocks() reports {len(held)}; every allocated or "
            "shared block must be in a block_table (or reported by held_blocks) until it is freed"
        )


def check_finish_freed(
    seq: Sequence, blocks: list[int], allocator: BlockAllocator, live: Iterable[Sequence], held: list[int]
) -> None:
    """After ``finish(seq)``: each block ``seq`` held is free, or still has a holder that accounts for it
    (another live sequence's block_table, or the scheduler's cache as reported by held_blocks())."""
    candidates = [b for b in dict.fromkeys(blocks) if 0 <= b < allocator.num_blocks and allocator.ref_count(b) > 0]
    if not candidates:
        return
    holders = set(held).union(*(other.block_table for other in live if other is not seq))
    leaked = [b for b in candidates if b not in holders]
    if leaked:
        shown = ", ".join(map(str, leaked[:8])) + (", ..." if len(leaked) > 8 else "")
        raise SchedulerInvariantError(
            f"finish() of sequence {seq.request_id!r} leaked {len(leaked)} KV block(s) ({shown}): they are still "
            "allocated but in no block_table and not in held_blocks(); free them with ctx.allocator.free(), or "
            "report the ones your cache keeps in held_blocks()"
        )


def check_released(seq: Sequence) -> None:
    if seq.block_table:
        raise SchedulerInvariantError(
            f"finish() left {len(seq.block_table)} blocks in the block_table of finished sequence "
            f"{seq.request_id!r}; free them (or move them to your cache) and clear the table"
        )


def user_frame(frames: list[traceback.FrameSummary]) -> str | None:
    """``path:line in function`` of the innermost frame outside engine_core (the scheduler's code)."""
    engine_dir = str(Path(__file__).parent)
    outside = [f for f in frames if not f.filename.startswith(engine_dir)]
    if not outside:
        return None
    frame = outside[-1]
    return f"{_short_path(frame.filename)}:{frame.lineno} in {frame.name}"


def describe_error(exc: BaseException) -> str:
    """One line naming where a scheduler failed: the innermost frame outside engine_core."""
    frames = traceback.extract_tb(exc.__traceback__)
    engine_dir = str(Path(__file__).parent)
    outside = [f for f in frames if not f.filename.startswith(engine_dir)]
    found = user_frame(frames)
    where = f"{found}: " if found else ""
    if isinstance(exc, NotImplementedError):
        hook = outside[-1].name if outside else "a hook"
        return f"{where}{hook}() is not implemented yet ({exc or 'raise NotImplementedError'})"
    if isinstance(exc, SchedulerInvariantError):
        return f"scheduler invariant broken: {exc}"
    return f"{where}{type(exc).__name__}: {exc}"


def _short_path(filename: str) -> str:
    path = Path(filename)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
