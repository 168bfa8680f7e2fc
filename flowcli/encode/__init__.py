"""One table column ↔ flow features, with the log-weight that keeps likelihoods in the column's units.

Owns: `columns` (an encoder per column kind), `dequantize` (discrete levels as slices of the
normal, values integrated out), `maps` (log and logit maps, rounding of samples), `preprocess`
(the encoders side by side: table ↔ features). May import: `flowcli.errors`, `flowcli.table`.
"""
