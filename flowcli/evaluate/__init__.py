"""`flowcli evaluate`: how faithful and how private a model and its synthetic rows are.

Owns: `values` (a table's model columns as comparable numbers), `fidelity` (SDMetrics' column
shapes and pair trends, and the detection test), `privacy` (exact copies, distances to the
closest training record, membership by likelihood), `report` (one report from three tables,
and the gates), `html` (the report as one self-contained page). May import: `flowcli.errors`,
`flowcli.table`, `flowcli.encode` and the model (`flowcli.model`). scikit-learn's nearest
neighbours and classifier are imported inside the functions that use them.
"""

from flowcli.evaluate.report import Gates, evaluate, evaluate_files

__all__ = ["Gates", "evaluate", "evaluate_files"]
