"""The paged KV pool: every layer's keys and values, in fixed-size blocks.

One tensor holds the whole pool, so its size is exactly what the memory budget allows:

    storage: [2 (K, V), num_layers, (num_blocks + 1) * block_size, num_kv_heads, head_dim]

A token's KV lives at one *slot* (a row of the third dimension) in every layer. Slots come in
blocks of ``block_size``; a sequence whose block table is [7, 2] keeps positions 0..15 in
block 7 and 16..31 in block 2 (block_size 16):

    position p  ->  slot = block_table[p // block_size] * block_size + p % block_size

    block table [7, 2]       block 2                      block 7
    positions 0..20     ...| p16 p17 p18 p19 p20 -- ... |...| p0 p1 ... p15 |...

One extra block after the last allocatable one, the *scratch block*, belongs to no sequence: a
CUDA graph captured for a batch of 8 that runs 5 sequences writes the 3 padding rows' KV there.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

CPU_DEFAULT_KV_BYTES = 1 << 30
CUDA_FREE_FRACTION = 0.9


class KVPool:
    """Keys and values of all layers, addressed by slot."""

    def __init__(
        self, num_layers: int, num_kv_heads: int, head_dim: int, num_blocks: int, block_size: int,
        dtype: torch.dtype, device: torch.device,
    ) -> None:
        self.num_layers = num_layers
        self.num_blocks = num_blocks  # blocks the allocator may hand out: 0 .. num_blocks - 1
        self.block_size = block_size
        self.scratch_block = num_blocks
        self.storage = torch.zeros(
            2, num_layers, (num_blocks + 1) * block_size, num_kv_heads, head_dim, dtype=dtype, device=device
        )

    @staticmethod
    def bytes_per_block(model_config: PretrainedConfig, block_size: int, dtype: torch.dtype) -> int:
        num_kv_heads, head_dim = kv_shape(model_config)
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * model_config.num_hidden_layers * block_size * num_kv_heads * head_dim * itemsize

    @classmethod
    def from_budget(
        cls, model_config: PretrainedConfig, block_size: int, budget_bytes: int | None,
        dtype: torch.dtype, device: torch.device, num_blocks: int | None = None,
    ) -> KVPool:
        """As many blocks as fit in ``budget_bytes`` (``None``: a default for the device).

        ``num_blocks``, when given, is the pool's size instead, and the budget is not read.
        """
        if num_blocks is None:
            num_blocks = _blocks_in_budget(model_config, block_size, budget_bytes, dtype, device)
        num_kv_heads, head_dim = kv_shape(model_config)
        return cls(model_config.num_hidden_layers, num_kv_heads, head_dim, num_blocks, block_size, dtype, device)

    @property
    def num_slots(self) -> int:
        """Slots of the allocatable blocks (the scratch block's are not counted)."""
        return self.num_blocks * self.block_size

    @property
    def scratch_slot(self) -> int:
        return self.scratch_block * self.block_size

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``(keys, values)`` of one layer, each ``[all slots, num_kv_heads, head_dim]``."""
        return self.storage[0, index], self.storage[1, index]


def kv_shape(model_config: PretrainedConfig) -> tuple[int, int]:
    """(number of KV heads, head dimension) of a transformers config."""
    num_heads = model_config.num_attention_heads
    num_kv_heads = getattr(model_config, "num_key_value_heads", None) or num_heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // num_heads
    return num_kv_heads, head_dim


def _blocks_in_budget(
    model_config: PretrainedConfig, block_size: int, budget_bytes: int | None, dtype: torch.dtype,
    device: torch.device,
) -> int:
    per_block = KVPool.bytes_per_block(model_config, block_size, dtype)
    if budget_bytes is None:
        budget_bytes = _default_budget(device)
    num_blocks = budget_bytes // per_block - 1  # one block of the budget is the scratch block
    if num_blocks < 1:
        raise ValueError(
            f"the KV budget of {budget_bytes} bytes holds no block of {block_size} tokens "
            f"({per_block} bytes each); raise kv_cache_bytes"
        )
    return num_blocks


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_FRACTION)
    return CPU_DEFAULT_KV_BYTES
