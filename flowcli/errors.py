"""The problems a user can fix, each raised with a message that says what to do.

The CLI prints a `FlowcliError` as one `error:` line and exits 1; Python callers catch it.
"""


class FlowcliError(Exception):
    """A problem with the user's data, files or options (never a bug in flowcli)."""


class DataError(FlowcliError, ValueError):
    """A table that cannot be read or used as given (a ValueError, as scikit-learn expects of bad input)."""


class NotFittedError(FlowcliError, ValueError, AttributeError):
    """A model used before `fit`; a ValueError and an AttributeError, like scikit-learn's NotFittedError."""


class BundleError(FlowcliError):
    """A file that is not a valid, intact .flow bundle this version can load."""


class OutputError(FlowcliError):
    """An output that cannot be written safely (it exists, or it is an input)."""


class FlowcliWarning(UserWarning):
    """Something flowcli did on the user's behalf, such as leaving a column out."""
