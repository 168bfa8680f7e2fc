"""Tables in and out: CSV and Parquet reading and writing, atomic output, values and column kinds.

Owns: `io` (files and streams), `atomic` (temporary file and rename), `values` (text to numbers
and dates), `schema` (which columns a model uses, of what kind), `reservoir` (a uniform sample
in one pass), `shards` (one table across torchrun ranks), `inputs` (what users pass from Python).
May import: `flowcli.errors`, `flowcli.parallel`. No torch.
"""
