"""Primitives for using more than one core or process: threads over row chunks, torchrun ranks.

Owns: `threads` (row-wise work side by side, input read ahead), `torchrun` (ranks, gathers and
reductions over torch.distributed, imported lazily). May import: `flowcli.errors` only.
"""
