"""The RealNVP flow: its configuration, bases and couplings (torch and numpy forms), and training.

Owns: `config` (`FlowConfig`, the shape shared by both forms), `torch_flow` (the module trained),
`numpy_flow` (inference without torch), `level_inputs` (the held columns' levels the couplings
read), `mixture` (EM for the mixture base), `optim`, `device` (where training runs, and whether
it fits), `train`.
May import: `flowcli.errors`, `flowcli.parallel`. Knows nothing of tables or columns.
"""
