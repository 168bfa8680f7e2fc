"""Conditionals of a fitted joint flow: sample or score some columns given the others.

Owns: `conditions` (what a user fixes: values, ranges, sets of categories; parsed, checked and
encoded), `proposal` (a Gaussian over the flow's features, conditioned as the user asks, to
draw candidates from), `importance` (candidates weighted by the flow's exact density:
resampled into conditional rows, or averaged into the marginal likelihood of the given
columns), `declared` (columns a model was fitted to condition on: exact draws in the latent,
exact likelihoods), and `draw` and `conditionals`, which choose among them. May import:
`flowcli.errors`, `flowcli.table`, `flowcli.encode`, `flowcli.flow`, `flowcli.parallel`. numpy
only: no torch.
"""
