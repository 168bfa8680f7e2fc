"""What users pass to `TabularFlow` (a DataFrame, a pyarrow Table or RecordBatch, or a 2-D
array) and the DataFrames it gives back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from flowcli.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


def as_table(data: Any) -> pa.Table:
    """A pyarrow Table from a DataFrame, Table, RecordBatch or 2-D array (columns x0, x1, ...)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise DataError(f"expected a 2-D array of rows and columns, got shape {data.shape}. Reshape your data: "
                            "X.reshape(-1, 1) for one column, X.reshape(1, -1) for one row")
        if data.shape[1] == 0:
            raise DataError(f"found an array with 0 feature(s) (shape={data.shape}) while a minimum of 1 is required; "
                            "give at least one column")
        if np.iscomplexobj(data):
            raise DataError("Complex data not supported; give real numbers")
        try:
            return pa.table({f"x{j}": data[:, j] for j in range(data.shape[1])})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # an object array holding, say, a dict
            message = f"an array's cells: every argument must be a string or a number (or None); {error}"
            raise TypeError(message) from None
    if hasattr(data, "columns") and hasattr(data, "dtypes"):  # a pandas DataFrame
        return pa.Table.from_pandas(data, preserve_index=False)
    if type(data).__module__.startswith("scipy.sparse"):
        raise DataError(f"sparse input ({type(data).__name__}) is not supported; pass a dense array (X.toarray())")
    raise DataError(f"expected a DataFrame, a pyarrow Table or a 2-D numpy array, got {type(data).__name__}")


def feature_names(data: Any, names: list[str]) -> np.ndarray | None:
    """scikit-learn's `feature_names_in_`: the input's column names, unless an array's names were
    made up (x0, x1, ...) or a DataFrame's labels are not all strings."""
    if isinstance(data, np.ndarray):
        return None
    if hasattr(data, "dtypes") and not all(isinstance(label, str) for label in data.columns):
        return None
    return np.asarray(names, dtype=object)


def as_frame(table: pa.Table) -> pd.DataFrame:
    """`table` as a DataFrame whose integer and boolean columns are pandas' nullable dtypes
    (Int64, boolean), which hold missing values without turning into floats."""
    import pandas as pd

    nullable = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
                pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=nullable.get)
