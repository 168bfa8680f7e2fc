"""flowcli: density estimation for tables with RealNVP normalizing flows.

`from flowcli import TabularFlow` is the Python API; the `flowcli` command wraps it.
Attributes load lazily, so `flowcli --help` does not import numpy, pyarrow or torch.
"""

__version__ = "0.1.0"
__all__ = ["TabularFlow", "FlowcliError", "__version__"]


def __getattr__(name: str):
    if name == "TabularFlow":
        from flowcli.model import TabularFlow

        return TabularFlow
    if name == "FlowcliError":
        from flowcli.errors import FlowcliError

        return FlowcliError
    raise AttributeError(f"module 'flowcli' has no attribute {name!r}")
