"""Every base distribution and coupling a flow can have, by the name bundles and flags use.

A base or coupling is one class (its torch and numpy forms side by side, in `bases` or
`couplings`) plus one line here. The names are kept free of imports, so that the CLI lists
them without loading numpy; `base` and `coupling` load the class when a flow needs it.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

BASES = {
    "normal": "flowcli.flow.bases:Normal",
    "student": "flowcli.flow.bases:StudentPerFeature",
    "multivariate-t": "flowcli.flow.bases:MultivariateStudent",
    "mixture": "flowcli.flow.bases:GaussianMixture",
}
COUPLINGS = {
    "affine": "flowcli.flow.couplings:Affine",
    "spline": "flowcli.flow.couplings:RationalQuadraticSpline",
}


@cache
def base(name: str):
    """The `bases.Base` registered as `name`."""
    return _load(BASES[name])


@cache
def coupling(name: str):
    """The `couplings.ElementwiseMap` registered as `name`."""
    return _load(COUPLINGS[name])


def _load(address: str):
    module, _, attribute = address.partition(":")
    return getattr(import_module(module), attribute)()
