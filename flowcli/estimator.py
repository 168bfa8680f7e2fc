"""scikit-learn's estimator conventions, without importing scikit-learn.

The constructor's keyword arguments are the hyperparameters: `get_params` and `set_params`
read them from the signature, `repr` shows those that differ from their defaults, and
`__sklearn_tags__` imports scikit-learn only when scikit-learn itself asks.
"""

from __future__ import annotations

import inspect
from typing import Any

from flowcli.errors import NotFittedError


class EstimatorConventions:
    """A mixin for a class whose `__init__` stores each keyword argument under its own name,
    and whose `__sklearn_is_fitted__` tells whether it has learned state."""

    @classmethod
    def _parameter_defaults(cls) -> dict[str, Any]:
        return {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()}

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments, as scikit-learn estimators report them."""
        return {name: getattr(self, name) for name in self._parameter_defaults()}

    def set_params(self, **params: Any) -> EstimatorConventions:
        """Change constructor arguments (as scikit-learn's `clone` and searches do); returns self."""
        known = self._parameter_defaults()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter {', '.join(unknown)}; it has {', '.join(known)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        """The constructor call with the arguments that differ from their defaults, as scikit-learn shows."""
        defaults = self._parameter_defaults()
        changed = (f"{name}={value!r}" for name, value in self.get_params().items() if value != defaults[name])
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            name = type(self).__name__
            raise NotFittedError(f"this {name} is not fitted yet; call fit(data) or {name}.load(path) first")

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's description: an unsupervised density model, like `KernelDensity`, that
        reads NaN as a missing value. Only scikit-learn calls this, so only here is it imported."""
        from sklearn.utils import InputTags, Tags, TargetTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False), input_tags=InputTags(allow_nan=True))


def one_of(value: Any, alias: Any, name: str, alias_name: str, default: Any) -> Any:
    """An argument given under its own name or under scikit-learn's, not both."""
    if alias is None:
        return default if value is None else value
    if value is not None:
        raise TypeError(f"give {name} or {alias_name}, not both")
    return alias
