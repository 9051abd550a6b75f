"""The engine: a model, its paged KV pool, a block allocator, a runner and a sampler.

It knows nothing about policy. A caller (the scheduler loop, a test, a benchmark) decides
which tokens of which sequences go into a step and which blocks they use; :meth:`Engine.step`
runs them in one forward and samples. :meth:`Engine.generate` is a plain offline loop on top
(static batching: prefill everything, then decode until every sequence is done), used as the
"run alone" oracle in tests and by the engine benchmark.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from .attention import create_backend
from .block_allocator import BlockAllocator, blocks_for
from .config import EngineConfig
from .kv_cache import KVPool
from .model_runner import ForwardItem, ModelRunner
from .models import load_model
from .sampler import Sampler, SampleResult, SampleRow
from .sampling_params import SamplingParams
from .tokenizer import ChatTokenizer

log = logging.getLogger(__name__)


class Engine:
    """Everything needed to run forwards on one model."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config = config or EngineConfig()
        loaded = load_model(config)
        self.model_name = loaded.name
        self.model = loaded.model
        self.device, self.dtype = config.resolved_device(), config.resolved_dtype()
        self.tokenizer = ChatTokenizer(loaded.tokenizer, getattr(self.model, "generation_config", None))
        self.kv = KVPool.from_budget(self.model.config, config.block_size, config.kv_cache_bytes, self.dtype,
                                     self.device, num_blocks=config.num_kv_blocks)
        # A sequence longer than the whole pool could never run.
        self.max_model_len = min(loaded.max_model_len, self.kv.num_slots)
        self.allocator = BlockAllocator(self.kv.num_blocks)
        self.backend = create_backend(config.attention_backend, self.device)
        self.runner = ModelRunner(
            self.model, self.kv, self.backend, self.allocator if config.check_invariants else None,
            compile_decode=config.compile and self.device.type == "cuda" and self.backend.supports_cuda_graphs,
        )
        self.sampler = Sampler()
        self._seeds = random.Random(config.seed)
        log.info(
            "model %s on %s (%s), %d KV blocks of %d tokens, attention %s",
            self.model_name, self.device, str(self.dtype).removeprefix("torch."),
            self.kv.num_blocks, self.kv.block_size, type(self.backend).__name__,
        )
        if self.device.type == "cuda" and config.cuda_graph_max_batch_size > 0 and self.backend.supports_cuda_graphs:
            self.runner.capture_cuda_graphs(config.cuda_graph_max_batch_size)

    @property
    def block_size(self) -> int:
        return self.kv.block_size

    def blocks_for(self, num_tokens: int) -> int:
        """How many blocks hold ``num_tokens`` positions."""
        return blocks_for(num_tokens, self.block_size)

    def new_seed(self) -> int:
        """A seed for a request that brought none."""
        return self._seeds.getrandbits(63)

    def step(self, items: list[ForwardItem], rows: list[SampleRow]) -> SampleResult:
        """One forward over ``items``, then sample one token per requested logit row."""
        logits = self.runner.forward(items)
        return self.sampler.sample(logits, rows)

    def generate(
        self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None
    ) -> list[list[int]]:
        """Generate for each prompt (token ids) and return each one's new token ids.

        Stops at ``max_tokens``, EOS (unless ``ignore_eos``) or a stop token id; stop strings
        are the frozen serving loop's business, not this helper's.
        """
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        seqs = [_OfflineSeq(list(p), sp, sp.seed if sp.seed is not None else self.new_seed())
                for p, sp in zip(prompts, params)]
        for seq in seqs:
            seq.blocks = self.allocator.allocate(self.blocks_for(len(seq.prompt) + seq.params.max_tokens))
        try:
            active = seqs
            items = [ForwardItem(s.prompt, 0, s.blocks) for s in active]
            while active:
                result = self.step(items, [s.sample_row() for s in active])
                for seq, token in zip(active, result.token_ids):
                    seq.output.append(token)
                    seq.done = self._finished(seq, token)
                active = [s for s in active if not s.done]
                items = [ForwardItem([s.output[-1]], s.num_tokens - 1, s.blocks) for s in active]
        finally:
            for seq in seqs:
                self.allocator.free(seq.blocks)
        return [s.output for s in seqs]

    def _finished(self, seq: _OfflineSeq, token: int) -> bool:
        if len(seq.output) >= seq.params.max_tokens:
            return True
        if token in seq.params.stop_token_ids:
            return True
        return not seq.params.ignore_eos and token in self.tokenizer.eos_token_ids


@dataclass
class _OfflineSeq:
    prompt: list[int]
    params: SamplingParams
    seed: int
    blocks: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    done: bool = False

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.output)

    def sample_row(self) -> SampleRow:
        return SampleRow(self.params, self.seed, len(self.output), self.prompt, self.output)
