"""Multi-core matrix-vector products for decode on CPU.

During decode each linear layer multiplies a handful of rows by a large weight matrix. On CPU,
PyTorch runs that skinny product (``F.linear`` with 1-32 rows) on a single core, so a decode
step is bound by how fast *one* core can stream the weights from memory (about 11 GB/s on a
2-core cloud VM: ~47 of the 57 ms a SmolLM2-135M step takes).

Splitting the weight into one row panel per thread and multiplying the panels with ``bmm``
lets every core stream its own panel: on that VM the same step falls to ~27 ms. Same float32
math, only the order of the partial sums per output differs (within float32 rounding).
Bigger batches (prefill) go to ``F.linear`` as before, which already uses all cores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Above this many rows F.linear is already parallel and at least as fast.
MAX_PANEL_ROWS = 32


class PanelLinear(nn.Linear):
    """An ``nn.Linear`` whose skinny products run as ``bmm`` over row panels."""

    panels: int = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        out_features, in_features = self.weight.shape
        if rows > MAX_PANEL_ROWS or out_features % self.panels:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, in_features)
        weight = self.weight.view(self.panels, out_features // self.panels, in_features)
        y = torch.bmm(weight, flat.t().unsqueeze(0).expand(self.panels, in_features, rows))
        y = y.permute(2, 0, 1).reshape(*x.shape[:-1], out_features)
        return y if self.bias is None else y + self.bias


def use_panel_linears(model: nn.Module, threads: int) -> int:
    """Switch every plain ``nn.Linear`` of a CPU model to :class:`PanelLinear`; returns how many."""
    if threads < 2:
        return 0
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = PanelLinear
            module.panels = threads  # type: ignore[assignment]  # now a PanelLinear, whose field this is
            count += 1
    return count
