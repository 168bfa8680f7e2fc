"""Property-based tests (Hypothesis) of flowcli's boundaries with the outside world.

Tables, files and bundles come from users and strangers, so at each boundary the contract is:
do the right thing, or raise the `FlowcliError` subclass that says what is wrong, never any other
exception. The properties:

1. schema inference and encoding of random pyarrow tables: finite features of the right shape
   that survive the bundle's JSON, or a `DataError`;
2. the preprocessing round trip: decoding the encoded features gives the table back; for
   continuous columns the log-weight is the log|det| of the map (−Σ log std when no column is
   transformed), and the encoders survive their JSON form;
3. the readers on tables written by pyarrow, and on random or damaged bytes: the same rows and
   column names, or a `DataError`;
4. the bundle loader on random bytes and on damaged or re-signed copies of a real bundle: the
   original weights, or a `BundleError`, and never any code run;
5. scoring and sampling the session's bundle: finite (or −inf outside the support seen at fit),
   of the right shape, and reproducible.

Every property runs twice: a quick run in the default selection and a `fuzz`-marked twin with
many more examples (`pytest -m fuzz tests/test_fuzz.py`). A bug a property found stays here as a
strict xfail whose explicit `@example` is the minimal reproduction, next to a passing version
of the same property whose strategy steers clear of that bug, so the rest stays guarded. Once
the bug is fixed, its property passes, the reproduction stays as a regression example, and the
general properties cover what they had steered clear of.
"""

from __future__ import annotations

import decimal
import hashlib
import io
import itertools
import json
import struct
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save as save_tensors

from flowcli import TabularFlow
from flowcli.bundle import MANIFEST, WEIGHTS
from flowcli.encode.preprocess import Preprocessor
from flowcli.errors import BundleError, DataError, FlowcliError
from flowcli.table.io import iter_batches, read_table
from flowcli.table.schema import KINDS, select_columns

# ----------------------------------------------------------------------------------- harness
FUZZ_FACTOR = 12  # the `fuzz` twin of a property runs this many times its default examples
# Failing examples are replayed on the next run. One database per property (its two twins share
# it), since several properties share a body and Hypothesis keys examples by the body's source;
# kept in the temporary folder, out of the working tree.
_DATABASES = Path(tempfile.gettempdir()) / "flowcli-hypothesis"


def property_test(
    name: str,
    body: Callable,
    *,
    examples: int,
    explicit: Sequence[dict] = (),
    marks: Sequence[pytest.MarkDecorator] = (),
    **strategies: st.SearchStrategy,
) -> None:
    """Define test_<name>, `body` over `strategies`, and test_<name>_fuzz, its `fuzz`-marked twin
    with FUZZ_FACTOR times the examples. `explicit` are examples (keyword arguments) run first,
    every time: the minimal reproductions of bugs, open or fixed.
    """

    def build(max_examples: int, extra_marks: Sequence[pytest.MarkDecorator]) -> Callable:
        test = given(**strategies)(body)
        for arguments in explicit:
            test = example(**arguments)(test)
        test = settings(
            max_examples=max_examples,
            deadline=None,
            database=DirectoryBasedExampleDatabase(_DATABASES / name),
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )(test)
        for mark in (*marks, *extra_marks):
            test = mark(test)
        return test

    module = globals()
    assert f"test_{name}" not in module, name
    module[f"test_{name}"] = build(examples, ())
    module[f"test_{name}_fuzz"] = build(examples * FUZZ_FACTOR, (pytest.mark.fuzz,))


def known_bug(raises: type[BaseException] | tuple[type[BaseException], ...], reason: str) -> pytest.MarkDecorator:
    """A strict xfail: the property must fail, with `raises`, until the bug is fixed."""
    return pytest.mark.xfail(raises=raises, reason=f"flowcli bug: {reason}", strict=True)


@pytest.fixture(autouse=True)
def _fuzz_twins_only_when_asked(request):
    """Long runs are opt-in: `-m fuzz` selects them; any other selection skips them."""
    if request.node.get_closest_marker("fuzz") and "fuzz" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long Hypothesis run; opt in with -m fuzz")


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A fresh folder per example (function-scoped fixtures are not reset between examples)."""
    with tempfile.TemporaryDirectory(prefix="flowcli-fuzz-") as folder:
        yield Path(folder)


# ------------------------------------------------------------------------ column strategies
Columns = Callable[[int], st.SearchStrategy]  # rows → a strategy of pa.Array of that length


def column(values: st.SearchStrategy, data_type: pa.DataType, convert: Callable = lambda v: v) -> Columns:
    """Arrays of `data_type` from `values`; half the columns also hold nulls."""

    def arrays(rows: int) -> st.SearchStrategy:
        def cells(with_nulls: bool) -> st.SearchStrategy:
            element = st.none() | values.map(convert) if with_nulls else values.map(convert)
            return st.lists(element, min_size=rows, max_size=rows)

        return st.booleans().flatmap(cells).map(lambda cells: pa.array(cells, type=data_type))

    return arrays


def integer_column(data_type: pa.DataType, low: int | None = None, high: int | None = None) -> Columns:
    info = np.iinfo(data_type.to_pandas_dtype())
    low = int(info.min) if low is None else low
    high = int(info.max) if high is None else high
    return column(st.integers(low, high), data_type)


def _cased(word: str) -> st.SearchStrategy:
    flips = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flips.map(lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper)))


_DIGITS = st.text("0123456789", min_size=1, max_size=5)
_MANTISSA = st.one_of(_DIGITS, _DIGITS.map(lambda d: d + "."), st.tuples(_DIGITS, _DIGITS).map(".".join), _DIGITS.map(lambda d: "." + d))
# Two exponent digits at most: with three, values can span more than float64's range
# (['1.7e308', '-1.7e308', '1.7e308']), an open flowcli bug (see FLOAT64_BOUND).
_EXPONENT = st.just("") | st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), st.text("0123456789", min_size=1, max_size=2)).map("".join)
# Text a CSV reader would take for a number (the grammar of flowcli.table.schema._NUMBER, minus blanks).
NUMBER_TEXT = st.tuples(
    st.sampled_from(["", "+", "-"]),
    st.tuples(_MANTISSA, _EXPONENT).map("".join) | st.sampled_from(["inf", "infinity", "nan"]).flatmap(_cased),
).map("".join)
# A number padded with the blanks that the regex's \s accepts (RE2: tab, newline, form feed, CR, space).
_BLANKS = st.text(" \t\n\r\f", max_size=2)
PADDED_NUMBER_TEXT = st.tuples(_BLANKS, NUMBER_TEXT, _BLANKS).filter(lambda parts: parts[0] or parts[2]).map("".join)
WORDS = st.text(max_size=8)  # any unicode, including digits of other scripts and blanks
NUMBERS = NUMBER_TEXT | PADDED_NUMBER_TEXT | _BLANKS  # a blank cell is a missing value


def string_column(data_type: pa.DataType) -> Columns:
    """Columns of numbers as text, of words, or of both mixed (a stray word in a numeric column)."""
    flavors = st.sampled_from([NUMBERS, WORDS, NUMBERS | WORDS, st.sampled_from(["a", "b", "c"])])
    return lambda rows: flavors.flatmap(lambda values: column(values, data_type)(rows))


def dictionary_column(rows: int) -> st.SearchStrategy:
    """Dictionary-encoded text, as pandas categories arrive."""
    return column(st.sampled_from(["x", "y", "z", "é"]), pa.string())(rows).map(lambda a: a.dictionary_encode())


def decimal_column(max_precision: int, min_precision: int = 1) -> Columns:
    def arrays(rows: int) -> st.SearchStrategy:
        def of_type(precision: int, scale: int) -> st.SearchStrategy:
            digits = st.integers(-(10**precision - 1), 10**precision - 1)
            return column(digits, pa.decimal128(precision, scale), lambda i: decimal.Decimal(f"{i}E-{scale}"))(rows)

        precision = st.integers(min_precision, max_precision)
        return precision.flatmap(lambda p: st.integers(0, p).flatmap(lambda s: of_type(p, s)))

    return arrays


def nulls_column(rows: int) -> st.SearchStrategy:
    return st.just(pa.nulls(rows))


def _floats(width: int, bound: float) -> st.SearchStrategy:
    """Floats within ±bound and a small range, and NaN (a missing value); not inf (a DataError)."""
    wide = st.floats(-bound, bound, width=width, allow_nan=False)
    return wide | st.floats(-3, 3, width=width) | st.sampled_from([0.0, 1.0, 0.5, float("nan")])


_TIMES = st.integers(-(2**52), 2**52)  # within every unit's range
# An open flowcli bug: NumericColumn.encode computes t − mean, which overflows when a column's
# values span more than float64's range: fit to [-1.797e308, 1.798e308, 1.780e308, ...] (12
# distinct values), a value seen at fit encodes to u = −inf. Within ±max/2 no difference overflows.
FLOAT64_BOUND = sys.float_info.max / 2
COLUMN_KINDS: dict[str, Columns] = {
    **{f"int{bits}": integer_column(getattr(pa, f"int{bits}")()) for bits in (8, 16, 32)},
    **{f"uint{bits}": integer_column(getattr(pa, f"uint{bits}")()) for bits in (8, 16, 32)},
    # 64-bit integers as large as float64 holds exactly, and beyond (rounded to float64).
    "int64": integer_column(pa.int64(), -(2**53), 2**53),
    "uint64": integer_column(pa.uint64(), 0, 2**53),
    "int64_wide": integer_column(pa.int64(), 2**53 + 1, 2**63 - 1),
    "uint64_wide": integer_column(pa.uint64(), 2**53 + 1, 2**64 - 1),
    "int40": integer_column(pa.int64(), -(2**40), 2**40),
    "float16": column(_floats(16, 65504), pa.float16()),
    "float32": column(_floats(32, 2.0**127), pa.float32()),
    "float64": column(_floats(64, FLOAT64_BOUND), pa.float64()),
    "float_nan": column(st.sampled_from([float("nan"), 1.0, 2.0]), pa.float64()),  # few levels, NaN missing
    "float_huge": column(st.floats(1e160, 1e300) | st.floats(-1e300, -1e160), pa.float64()),  # squares overflow
    "decimal": decimal_column(15),
    "bool": column(st.booleans(), pa.bool_()),
    "timestamp": column(_TIMES, pa.timestamp("ms")),
    "timestamp_tz": column(_TIMES, pa.timestamp("ns", tz="Europe/Paris")),
    "date32": column(st.integers(-(10**6), 10**6), pa.date32()),
    "string": string_column(pa.string()),
    "large_string": string_column(pa.large_string()),
    "nan_text": column(st.sampled_from(["nan", "NaN", "", "  "]), pa.string()),  # numbers, all of them missing
    "dictionary": dictionary_column,
    "null": nulls_column,
    "binary": column(st.binary(max_size=6), pa.binary()),
}
ALL_KINDS = tuple(COLUMN_KINDS)
CSV_KINDS = tuple(kind for kind in ALL_KINDS if kind not in ("binary", "dictionary"))  # pyarrow's CSV writer takes neither

COLUMN_NAMES = st.text(max_size=6) | st.sampled_from(["a", "x", "é", "列", " ", "", "1", "a,b", '"q"', "line\nbreak"])


@st.composite
def tables(
    draw,
    kinds: Sequence[str] = ALL_KINDS,
    *,
    focus: Sequence[str] = (),
    min_columns: int = 0,
    max_columns: int = 5,
    max_rows: int = 25,
    min_rows: int = 0,
) -> pa.Table:
    """A table of columns of `kinds` plus one of `focus` (when given), in one to three chunks."""
    rows = draw(st.integers(min_rows, max_rows))
    chosen = draw(st.lists(st.sampled_from(kinds), min_size=min_columns, max_size=max_columns))
    if focus:
        chosen.insert(draw(st.integers(0, len(chosen))), draw(st.sampled_from(focus)))
    names = draw(st.lists(COLUMN_NAMES, min_size=len(chosen), max_size=len(chosen), unique=draw(st.booleans())))
    if not chosen:
        return pa.table({})
    table = pa.Table.from_arrays([draw(COLUMN_KINDS[kind](rows)) for kind in chosen], names=names)
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=2)))
    bounds = [0, *cuts, rows]
    return pa.concat_tables([table.slice(a, b - a) for a, b in itertools.pairwise(bounds)])


NOISE_SEEDS = st.integers(0, 2**32 - 1)


def noise(rows: int, width: int, seed: int, margin: float = 0.0) -> np.ndarray:
    """Dequantization and imputation noise, uniform on (margin, 1 − margin)."""
    return np.random.default_rng(seed).uniform(margin, 1 - margin, size=(rows, width))


def fit_preprocessor(table: pa.Table, requested: list[str] | None) -> tuple[pa.Table, Preprocessor]:
    """The modeled columns of `table` and their fitted encoders, as TabularFlow.fit makes them."""
    selection = select_columns(table, requested, source="t")
    assert selection.columns, "a selection without columns"
    assert set(selection.kinds.values()) <= set(KINDS)
    if requested is None:
        assert set(selection.columns).isdisjoint(selection.left_out)
        assert sorted([*selection.columns, *selection.left_out]) == sorted(table.column_names)
    else:
        assert selection.columns == list(requested)
    modeled = table.select(selection.columns)
    return modeled, Preprocessor.fit(modeled, selection.kinds, source="t")


def saved_and_loaded(preprocessor: Preprocessor) -> Preprocessor:
    """The preprocessor as a bundle stores it (strict JSON) and reads it back."""
    return Preprocessor.from_json(json.loads(json.dumps(preprocessor.to_json(), allow_nan=False)))


# ------------------------------------------------------------------ 1. schema and encoding
def _requested(table: pa.Table) -> st.SearchStrategy:
    """None (infer the columns) most often, else a list of names, some of them maybe missing."""
    name = st.sampled_from(table.column_names) | COLUMN_NAMES if table.column_names else COLUMN_NAMES
    return st.none() | st.none() | st.lists(name, max_size=4)


def schema_cases(kinds: Sequence[str] = ALL_KINDS, focus: Sequence[str] = ()) -> st.SearchStrategy:
    """(table, requested columns), with a column of one of `focus` when given."""
    return tables(kinds, focus=focus).flatmap(lambda table: st.tuples(st.just(table), _requested(table)))


def check_schema_and_encoding(case: tuple[pa.Table, list[str] | None], noise_seed: int) -> None:
    table, requested = case
    try:
        modeled, preprocessor = fit_preprocessor(table, requested)
        draws = noise(table.num_rows, preprocessor.width, noise_seed)
        u, log_weight = preprocessor.encode(modeled, draws, source="t")
    except DataError:
        event("DataError")
        return
    event(f"kinds: {', '.join(sorted({column.kind for column in preprocessor.columns}))}")
    assert preprocessor.names == modeled.column_names and preprocessor.width >= modeled.num_columns
    assert u.shape == (table.num_rows, preprocessor.width) and log_weight.shape == (table.num_rows,)
    assert np.isfinite(u).all(), u
    assert np.isfinite(log_weight).all(), log_weight  # every value was seen at fit
    restored = saved_and_loaded(preprocessor)
    u_again, log_weight_again = restored.encode(modeled, draws, source="t")
    np.testing.assert_array_equal(u_again, u)
    np.testing.assert_array_equal(log_weight_again, log_weight)


_SCHEMA = {"noise_seed": NOISE_SEEDS}
property_test(
    "schema_and_encoding", check_schema_and_encoding, examples=200, case=schema_cases(), **_SCHEMA,
    explicit=[
        {"case": (pa.table({}), None), "noise_seed": 0},
        {"case": (pa.table({"a": ["1", "2.5e3", " -.5", "+Inf", ""]}), None), "noise_seed": 0},
        {"case": (pa.table({"a": ["1", "2", "3", "x"], "b": [1, 2, 3, 4]}), None), "noise_seed": 0},
        {"case": (pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"]), None), "noise_seed": 0},
        {"case": (pa.table({"a": [1.0, 2.0]}), []), "noise_seed": 0},
    ],
)

# Columns that once broke fit or save, each with its minimal reproduction, now a regression example.
FOCUSED_SCHEMA_CASES = {
    # Integers past 2**53 round to float64 (IDs, hashes, epoch nanoseconds), int64 and uint64 alike.
    "int64_beyond_float64": (("int64_wide", "uint64_wide"), pa.table({"a": pa.array([2**53 + i for i in range(11)], pa.int64())})),
    # Decimals with few distinct values are levels, stored as float64 (a Parquet price column).
    "few_decimals": (("decimal",), pa.table({"a": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.25")], pa.decimal128(5, 2))})),
    # NaN is a missing value, never a level that the bundle's strict JSON could not hold.
    "nan_level": (("float_nan",), pa.table({"a": [1.0, float("nan"), 2.0]})),
    # Half floats with few distinct values are levels, as float64.
    "float16_levels": (("float16",), pa.table({"a": pa.array([1.0, 2.0, 2.0], pa.float16())})),
    # Text whose only numbers are 'nan' and blanks is entirely missing: a DataError that says so.
    "nan_text": (("nan_text",), pa.table({"a": ["nan", ""]})),
    # Values past 1e154, whose squares overflow, still get a finite scale and log-weights.
    "huge_floats": (("float_huge",), pa.table({"a": [(-1) ** i * 1e200 * (i + 1) for i in range(11)]})),
}
for _name, (_focus, _table) in FOCUSED_SCHEMA_CASES.items():
    property_test(
        f"schema_{_name}", check_schema_and_encoding, examples=20, case=schema_cases(focus=_focus), **_SCHEMA,
        explicit=[{"case": (_table, None), "noise_seed": 0}],
    )


# ------------------------------------------------------------------------- 2. preprocessing
@st.composite
def standardizable(draw) -> np.ndarray:
    """Finite float64 matrices whose columns live on scales from 1e-9 to 1e12, off-center."""
    rows, features = draw(st.integers(11, 40)), draw(st.integers(1, 5))
    base = draw(hnp.arrays(np.float64, (rows, features), elements=st.integers(-(10**6), 10**6).map(lambda i: i / 1000)))
    scales = 10.0 ** np.array(draw(st.lists(st.floats(-9, 12), min_size=features, max_size=features)))
    offsets = np.array(draw(st.lists(st.just(0.0) | st.floats(-1e6, 1e6), min_size=features, max_size=features)))
    x = (base + offsets) * scales
    assume(np.isfinite(x).all() and all(len(np.unique(x[:, j])) > 10 for j in range(features)))  # continuous
    return x


def _log_jacobian(preprocessor: Preprocessor, x: np.ndarray, names: list[str]) -> np.ndarray:
    """Σ_j log|∂u_j/∂x_j| per row by central differences: an oracle independent of the encoders."""
    total = np.zeros(len(x))
    half = np.full((len(x), preprocessor.width), 0.5)
    for j, column in enumerate(preprocessor.columns):
        # A step small against the column's scale, and against x itself where log needs x > 0.
        h = 1e-6 * (np.abs(x[:, j]) if column.transform == "log" else np.full(len(x), np.abs(x[:, j]).max()))
        up, down = x.copy(), x.copy()
        up[:, j] += h
        down[:, j] -= h
        u_up = preprocessor.encode(pa.table({n: up[:, k] for k, n in enumerate(names)}), half)[0][:, j]
        u_down = preprocessor.encode(pa.table({n: down[:, k] for k, n in enumerate(names)}), half)[0][:, j]
        total += np.log(np.abs(u_up - u_down) / (up[:, j] - down[:, j]))
    return total


def check_continuous_round_trip(x: np.ndarray) -> None:
    names = [f"c{j}" for j in range(x.shape[1])]
    table = pa.table({name: x[:, j] for j, name in enumerate(names)})
    transform = Preprocessor.fit(table, dict.fromkeys(names, "continuous"), source="t")
    # One column gets one auxiliary feature (a one-feature flow could only be affine).
    assert transform.auxiliary == (x.shape[1] == 1) and transform.width == x.shape[1] + transform.auxiliary
    assert transform.is_exact(table) == (not transform.auxiliary)
    noise = np.full((len(x), transform.width), 0.5)  # the auxiliary feature at Φ⁻¹(0.5) = 0
    u, log_weight = transform.encode(table, noise)
    log_weight = log_weight - transform.auxiliary * 0.5 * np.log(2 * np.pi)  # its weight, 1 / φ(0)
    u = u[:, : x.shape[1]]
    assert np.isfinite(u).all() and np.isfinite(log_weight).all()
    np.testing.assert_allclose(u.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(u.std(axis=0), 1, rtol=1e-6)

    back = transform.decode(np.column_stack([u, noise[:, x.shape[1]:]]), np.random.default_rng(0))
    assert back.schema.names == names and all(t == pa.float64() for t in back.schema.types)
    x_back = np.column_stack([back.column(j).to_numpy() for j in range(x.shape[1])])
    tolerance = 1e-9 * (np.abs(x) + np.abs(x).max(axis=0))
    assert (np.abs(x_back - x) <= tolerance).all(), np.abs(x_back - x).max()

    np.testing.assert_allclose(log_weight, _log_jacobian(transform, x, names), rtol=1e-6, atol=1e-5)
    if all(column.transform == "identity" for column in transform.columns):
        std = np.sqrt(np.mean((x - x.mean(axis=0)) ** 2, axis=0))
        np.testing.assert_allclose(log_weight, -np.log(std).sum(), rtol=1e-9, atol=1e-9)
    event(f"transforms: {', '.join(sorted({column.transform for column in transform.columns}))}")

    restored = saved_and_loaded(transform)
    assert restored == transform
    assert np.array_equal(restored.encode(table, noise)[0][:, : x.shape[1]], u)


property_test("continuous_round_trip", check_continuous_round_trip, examples=100, x=standardizable())


def _as_numbers(values: pa.Array) -> np.ndarray:
    """A numeric or numeric-text column as float64, NaN where missing (null, blank or 'nan')."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return np.array([float(v) if v is not None and v.strip() else np.nan for v in values.to_pylist()])
    return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)


def _same_values(original: pa.ChunkedArray, decoded: pa.Array, kind: str) -> None:
    """Decoded values equal the original ones: exactly for discrete kinds, closely for the rest."""
    original = original.combine_chunks()
    if pa.types.is_dictionary(original.type):
        original = original.dictionary_decode()
    if pa.types.is_floating(original.type):  # NaN is a missing value: it decodes as null
        original = pc.if_else(pc.is_nan(original), pa.scalar(None, original.type), original)
    if pa.types.is_date(original.type):  # as day numbers: python's dates stop at year 1 and 9999
        assert pc.cast(decoded, pa.int32()).to_pylist() == pc.cast(original.cast(decoded.type), pa.int32()).to_pylist()
    elif kind in ("categorical", "boolean", "integer"):
        assert decoded.to_pylist() == original.cast(decoded.type).to_pylist()
    elif kind == "datetime":
        present = original.is_valid().to_numpy(zero_copy_only=False)
        assert decoded.is_valid().to_numpy(zero_copy_only=False).tolist() == present.tolist()
        ticks = [pc.cast(v, pa.int64()).to_numpy(zero_copy_only=False)[present] for v in (original, decoded)]
        span = int(ticks[0].max() - ticks[0].min()) if present.any() else 0
        assert (np.abs(ticks[1] - ticks[0]) <= 2 + span * 1e-12).all(), (ticks, span)
    else:
        x, y = _as_numbers(original), _as_numbers(decoded)
        assert np.isnan(y).tolist() == np.isnan(x).tolist()
        present = ~np.isnan(x)
        assert (np.abs(y[present] - x[present]) <= 1e-9 * np.abs(x[present]) + 1e-9 * np.abs(x[present]).max(initial=0)).all()


def check_table_round_trip(case: tuple[pa.Table, list[str] | None], noise_seed: int) -> None:
    """decode(encode(table)) is the table: its values, types where they can hold them, and nulls."""
    table, requested = case
    try:
        modeled, preprocessor = fit_preprocessor(table, requested)
        u, _ = preprocessor.encode(modeled, noise(table.num_rows, preprocessor.width, noise_seed, margin=0.01), source="t")
    except DataError:
        event("DataError")
        return
    decoded = preprocessor.decode(u, np.random.default_rng(noise_seed))
    assert decoded.schema.names == modeled.column_names and decoded.num_rows == table.num_rows
    for column, name in zip(preprocessor.columns, modeled.column_names):
        event(f"kind: {column.kind}")
        assert decoded.column(name).type == column.output_type
        _same_values(modeled.column(name), decoded.column(name), column.kind)


# Integers within 2**40: beyond, x + noise loses the noise's precision (dequantization is float64).
ROUND_TRIP_KINDS = tuple(kind for kind in ALL_KINDS if kind not in ("int64", "uint64", "int64_wide", "uint64_wide"))
property_test(
    "table_round_trip", check_table_round_trip, examples=150, case=schema_cases(ROUND_TRIP_KINDS), noise_seed=NOISE_SEEDS,
)


# -------------------------------------------------------------------------------- 3. readers
def write_table(table: pa.Table, path: Path) -> None:
    if path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)


def read_all(path: Path, batch_rows: int, column_types: dict[str, pa.DataType]) -> dict[str, tuple[int, list[str]]]:
    """Rows and column names as read_table and as iter_batches see them; readers that raised
    DataError are left out (any other exception escapes)."""
    seen = {}
    try:
        table = read_table(str(path))
        seen["read_table"] = (table.num_rows, table.column_names)
    except DataError:
        pass
    try:
        schema, batches = iter_batches(str(path), batch_rows=batch_rows, column_types=column_types)
        rows = sum(batch.num_rows for batch in batches)
        seen["iter_batches"] = (rows, schema.names)
    except DataError:
        pass
    event(f"read by: {', '.join(seen) or 'neither (DataError)'}")
    return seen


def check_table_file(table: pa.Table, suffix: str, batch_rows: int, types: list[tuple[int, pa.DataType]]) -> None:
    names = table.column_names
    column_types = {names[i % len(names)]: data_type for i, data_type in types} if names else {}  # as score reads
    with scratch_folder() as folder:
        path = folder / f"table{suffix}"
        write_table(table, path)
        for reader, (rows, read_names) in read_all(path, batch_rows, column_types).items():
            assert (rows, read_names) == (table.num_rows, names), reader


def lone_column_with_missing(table: pa.Table) -> bool:
    """A one-column table with a null: pyarrow writes the null as an empty CSV line."""
    return table.num_columns == 1 and table.column(0).null_count > 0


# The types score reads a model's columns as (Preprocessor.read_types), on any column.
READ_TYPES = st.sampled_from([pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.timestamp("us"), pa.date32()])
_TABLE_FILE = {"batch_rows": st.integers(1, 20), "types": st.lists(st.tuples(st.integers(0, 10), READ_TYPES), max_size=3)}

# Blank lines are skipped, as pandas skips them, so a one-column CSV writes a missing value as
# "" or NA, not as an empty line (README: the CLI reference); such tables are left out here.
property_test(
    "csv_files", check_table_file, examples=150, suffix=st.just(".csv"),
    table=tables(CSV_KINDS).filter(lambda t: not lone_column_with_missing(t)),
    **_TABLE_FILE,
)

property_test(
    "parquet_files", check_table_file, examples=150, suffix=st.just(".parquet"), table=tables(), **_TABLE_FILE,
)


BIG_CSV_BYTES = 20 << 20  # beyond the readers' 16 MiB CSV block, so rows cross block boundaries


def repeated_rows(words: Sequence[str], first: str = "") -> pa.Table:
    """A text column cycling through `words` (after an optional `first` row), numbered, over BIG_CSV_BYTES."""
    row_bytes = sum(len(word.encode()) for word in words) / len(words) + 10  # quotes, comma, number, newline
    rows = int(BIG_CSV_BYTES / row_bytes) + 1
    text = pc.take(pa.array(list(words)), pa.array(np.arange(rows) % len(words)))
    if first:
        text = pa.concat_arrays([pa.array([first]), text])
    return pa.table({"text": text, "n": np.arange(len(text))})


def big_csv_tables(line_breaks: bool) -> st.SearchStrategy:
    """Tables whose CSV spans several read blocks, of text that may hold line breaks (quoted). No
    NUL: a NUL byte makes a file binary to flowcli, as to Python's csv module ("line contains NUL")."""
    characters = st.characters(codec="utf-8", exclude_characters="\0" if line_breaks else "\0\n\r")
    words = st.lists(st.text(characters, min_size=1, max_size=30), min_size=1, max_size=5)
    return st.tuples(words, st.text("x", max_size=30)).map(lambda parts: repeated_rows(*parts))


def check_big_csv(table: pa.Table) -> None:
    """A CSV pyarrow writes is read whole, by both readers, however long."""
    with scratch_folder() as folder:
        path = folder / "big.csv"
        write_table(table, path)
        assert read_table(str(path)).num_rows == table.num_rows
        _, batches = iter_batches(str(path), batch_rows=65_536, column_types={"n": pa.string()})
        assert sum(batch.num_rows for batch in batches) == table.num_rows


property_test(
    "big_csv_quoted_line_breaks", check_big_csv, examples=3, table=big_csv_tables(line_breaks=True),
    explicit=[{"table": repeated_rows(["first line\nsecond line"], first="xxxxxx")}],  # a break across blocks
)


# ----------------------------------------------------------------------- damaged bytes
def mutation_plans(regions: Sequence[str]) -> st.SearchStrategy:
    """One to three edits: flip a bit, truncate, insert, or overwrite, somewhere in a region.

    Positions are resolved against the bytes in the test (regions name ranges found there), so
    the plan does not depend on a file that exists only once the fixtures have run.
    """
    region = st.sampled_from(regions)
    position = st.integers(0, 2**32)
    payload = st.binary(min_size=1, max_size=16) | st.sampled_from([0, 1, 12, 14, 93, 99, 0x7F, 0x80, 0xFF]).map(lambda b: bytes([b]))
    edit = st.one_of(
        st.tuples(st.just("flip"), region, position, st.integers(0, 7)),
        st.tuples(st.just("truncate"), region, position),
        st.tuples(st.just("insert"), region, position, payload),
        st.tuples(st.just("overwrite"), region, position, payload),
    )
    return st.lists(edit, min_size=1, max_size=3)


def apply_plan(data: bytes, plan: Sequence[tuple], regions: dict[str, Sequence[range]]) -> bytes:
    out = bytearray(data)
    for kind, region, position, *argument in plan:
        spans = [span for span in regions.get(region, ()) if len(span)] or [range(len(out) or 1)]
        span = spans[position % len(spans)]
        at = min(span[position % len(span)], len(out))
        if kind == "flip" and at < len(out):
            out[at] ^= 1 << argument[0]
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = argument[0]
        elif kind == "overwrite":
            out[at:at + len(argument[0])] = argument[0]
    return bytes(out)


def check_garbage_table(data: bytes, suffix: str, batch_rows: int) -> None:
    """Whatever the bytes, the readers return a usable table or raise DataError."""
    with scratch_folder() as folder:
        path = folder / f"garbage{suffix}"
        path.write_bytes(data)
        read_all(path, batch_rows, {"a": pa.string(), "b": pa.float64()})


def _valid_file(suffix: str) -> bytes:
    table = pa.table({"a": [1.5, 2.5, None, 4.0], "b": ["x", "y,z", 'q"', "é"], "c": [1, 2, 3, 4]})
    sink = io.BytesIO()
    if suffix == ".csv":
        pa_csv.write_csv(table, sink)
    else:
        pq.write_table(table, sink, row_group_size=2)
    return sink.getvalue()


def damaged_files(suffix: str) -> st.SearchStrategy:
    valid = _valid_file(suffix)
    tail = {"tail": [range(max(0, len(valid) - 200), len(valid))]}  # Parquet's footer lives there
    damaged = mutation_plans(["anywhere", "tail"]).map(lambda plan: apply_plan(valid, plan, tail))
    csv_like = st.text(st.sampled_from(list(',"\n\r\t ae1.-+E\x00\ufeff\u00e9')), max_size=60).map(str.encode)
    framed = st.tuples(st.binary(max_size=40), st.integers(0, 2**32 - 1)).map(
        lambda parts: b"PAR1" + parts[0] + struct.pack("<I", parts[1] % (len(parts[0]) + 9)) + b"PAR1"
    )
    return st.one_of(st.binary(max_size=300), csv_like, framed, damaged)


property_test(
    "garbage_csv", check_garbage_table, examples=200, data=damaged_files(".csv"), suffix=st.just(".csv"), batch_rows=st.integers(1, 5),
)

# A header in another encoding, which pyarrow hands over undecoded: a DataError, 'not UTF-8 text'.
LATIN1_CSV = st.tuples(st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters=',"'), min_size=1, max_size=6), min_size=1, max_size=3),
                       st.integers(1, 4)).map(lambda t: (",".join(t[0]) + "\n" + ("\n".join([",".join("1" * len(t[0]))] * t[1])) + "\n").encode("latin-1"))
property_test(
    "csv_header_not_utf8", check_garbage_table, examples=10, data=LATIN1_CSV, suffix=st.just(".csv"), batch_rows=st.integers(1, 5),
    explicit=[{"data": b"caf\xe9,x\n1,2\n3,5\n", "suffix": ".csv", "batch_rows": 1}],
)

# Damaged Parquet metadata or pages, which pyarrow reports as OSError, are a DataError too.
property_test(
    "garbage_parquet", check_garbage_table, examples=200, data=damaged_files(".parquet"), suffix=st.just(".parquet"),
    batch_rows=st.integers(1, 5), explicit=[{"data": b"PAR1\x00\x00\x00\x00PAR1", "suffix": ".parquet", "batch_rows": 1}],
)


# --------------------------------------------------------------------------- 4. bundle loader
_AUDIT_INSTALLED: list[bool] = []
_AUDIT: list[list[str]] = []  # while loading: a list collecting the events that mean running code
_CODE_EVENTS = ("pickle.find_class", "marshal.loads", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                "os.fork", "subprocess.Popen", "ctypes.dlopen", "ctypes.call_function")


def _audit(name: str, args: tuple) -> None:
    if not _AUDIT:
        return
    if name in _CODE_EVENTS:
        _AUDIT[-1].append(name)
    elif name in ("exec", "compile"):
        # Importing a module execs code from its file; anything else (source text) is suspect.
        filename = getattr(args[0], "co_filename", None) if name == "exec" else args[1]
        if not isinstance(filename, str) or (filename.startswith("<") and not filename.startswith("<frozen")):
            _AUDIT[-1].append(f"{name} {filename!r}")


@contextmanager
def no_code_run() -> Iterator[None]:
    """Fail when the block compiles or executes code, unpickles, or starts a process."""
    if not _AUDIT_INSTALLED:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: it idles while _AUDIT is empty
        _AUDIT_INSTALLED.append(True)
    _AUDIT.append([])
    try:
        yield
    finally:
        events = _AUDIT.pop()
    assert not events, f"loading ran code: {events}"


@pytest.mark.parametrize("run_code", [
    lambda: eval("1 + 1"),
    lambda: __import__("pickle").loads(__import__("pickle").dumps(__import__("collections").OrderedDict())),
])
def test_no_code_run_notices_code(run_code):
    """The guard of property 4 is not vacuous: it sees eval and unpickling."""
    with pytest.raises(AssertionError, match="loading ran code"), no_code_run():
        run_code()


def _zip(members: dict[str, bytes]) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if name == MANIFEST else zipfile.ZIP_STORED
            archive.writestr(info, data)
    return sink.getvalue()


def load_or_bundle_error(data: bytes) -> TabularFlow | None:
    """TabularFlow.load of `data` as a file: the model, or None after a BundleError."""
    with scratch_folder() as folder:
        path = folder / "model.flow"
        path.write_bytes(data)
        with no_code_run():
            try:
                model = TabularFlow.load(path)
            except BundleError:
                event("BundleError")
                return None
    event("loaded")
    return model


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


class Original(tuple):
    """The session bundle's bytes and model; short in Hypothesis' reports of failing examples."""

    def __repr__(self) -> str:
        return "<the bytes and model of conftest's bundle_path>"


@pytest.fixture(scope="module")
def original(bundle_path) -> Original:
    model = TabularFlow.load(bundle_path)  # also imports whatever loading needs, before auditing
    return Original((bundle_path.read_bytes(), model))


# Zip header fields: (offset in the header, width in bytes); see APPNOTE.TXT 4.3.7, 4.3.12, 4.3.16.
_LOCAL_FIELDS = {"version": (4, 2), "flags": (6, 2), "method": (8, 2), "time": (10, 2), "date": (12, 2), "crc": (14, 4),
                 "compressed": (18, 4), "size": (22, 4), "name_length": (26, 2), "extra_length": (28, 2)}
_CENTRAL_FIELDS = {"made_by": (4, 2), "version": (6, 2), "flags": (8, 2), "method": (10, 2), "time": (12, 2), "date": (14, 2),
                   "crc": (16, 4), "compressed": (20, 4), "size": (24, 4), "name_length": (28, 2), "extra_length": (30, 2),
                   "comment_length": (32, 2), "disk": (34, 2), "internal": (36, 2), "external": (38, 4), "offset": (42, 4)}
_END_FIELDS = {"disk": (4, 2), "directory_disk": (6, 2), "disk_entries": (8, 2), "entries": (10, 2),
               "directory_size": (12, 4), "directory_offset": (16, 4), "comment_length": (20, 2)}
_HEADERS = {"local": _LOCAL_FIELDS, "central": _CENTRAL_FIELDS, "end": _END_FIELDS}


def zip_layout(data: bytes) -> dict[tuple[str, str], int]:
    """Where each header starts: (kind, member) → offset, with ('end', '') for the end record."""
    layout = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        at = archive.start_dir
        for info in archive.infolist():
            layout["local", info.filename] = info.header_offset
            layout["central", info.filename] = at
            at += 46 + len(info.filename.encode()) + len(info.extra) + len(info.comment)
        layout["end", ""] = at
    return layout


def zip_regions(layout: dict[tuple[str, str], int], size: int) -> dict[str, list[range]]:
    """'headers': every zip header (with its name) and the end record, where damage matters most."""
    spans = []
    for (kind, member), start in layout.items():
        length = {"local": 30, "central": 46, "end": 22}[kind] + len(member.encode())
        spans.append(range(start, min(start + length, size)))
    return {"headers": spans}


def set_zip_field(data: bytes, layout: dict[tuple[str, str], int], kind: str, member: str, field: str, value: int) -> bytes:
    start = layout[kind, "" if kind == "end" else member]
    offset, width = _HEADERS[kind][field]
    out = bytearray(data)
    out[start + offset:start + offset + width] = (value % 256**width).to_bytes(width, "little")
    return bytes(out)


_INTERESTING = st.sampled_from([0, 1, 2, 8, 9, 12, 14, 93, 95, 98, 99, 0x7F, 0xFF, 0x800, 0xFFFF, 2**31, 2**32 - 1])
ZIP_FIELD_EDITS = st.sampled_from(list(_HEADERS)).flatmap(
    lambda kind: st.tuples(
        st.just(kind), st.sampled_from([MANIFEST, WEIGHTS]), st.sampled_from(list(_HEADERS[kind])),
        _INTERESTING | st.integers(0, 2**32 - 1),
    )
)
BUNDLE_EDITS = st.tuples(mutation_plans(["anywhere", "headers"]), st.lists(ZIP_FIELD_EDITS, max_size=2))


def check_damaged_bundle(original, edits: tuple[list, list[tuple]]) -> None:
    data, model = original
    plan, field_edits = edits
    layout = zip_layout(data)  # of the intact bundle: damaged ones may not parse
    for edit in field_edits:
        data = set_zip_field(data, layout, *edit)
    data = apply_plan(data, plan, zip_regions(layout, len(data)))
    loaded = load_or_bundle_error(data)
    if loaded is not None:
        assert same_weights(loaded.weights_, model.weights_), "a damaged bundle loaded different weights"


def check_random_bundle(original, data: bytes) -> None:
    loaded = load_or_bundle_error(data)
    if loaded is not None:
        assert same_weights(loaded.weights_, original[1].weights_)


property_test(
    "damaged_bundle", check_damaged_bundle, examples=300, edits=BUNDLE_EDITS,
    explicit=[{"edits": ([], [])}, {"edits": ([], [("central", MANIFEST, "time", 12345)])}],
)

# A member whose compression method is not one flowcli writes (stored, deflated), such as 14
# (LZMA) in the central directory, is a BundleError, never a decompressor's own exception.
property_test(
    "damaged_bundle_compression_method", check_damaged_bundle, examples=10,
    edits=st.tuples(st.just([]), st.lists(st.tuples(st.just("central"), st.sampled_from([MANIFEST, WEIGHTS]), st.just("method"), _INTERESTING), min_size=1, max_size=1)),
    explicit=[{"edits": ([], [("central", WEIGHTS, "method", zipfile.ZIP_LZMA)])}],
)

_ZIP_OF_JUNK = st.tuples(st.binary(max_size=200), st.binary(max_size=200)).map(
    lambda members: _zip({MANIFEST: members[0], WEIGHTS: members[1]})
)
property_test(
    "random_bundle", check_random_bundle, examples=200,
    data=st.one_of(st.binary(max_size=400), st.binary(max_size=400).map(lambda b: b"PK\x03\x04" + b), _ZIP_OF_JUNK),
)


# Re-signed bundles: a crafted manifest or weights, with valid zip CRCs and a matching checksum,
# as anyone can write. They may load, but then as a usable model; otherwise a BundleError.
# Integers past float64's range, and the NaN and infinities json.loads reads, load or are a BundleError.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=5) | st.sampled_from([2**63, 2**64, 10**400, 0, -1, 1e308, 5e-324, "nan", "inf", "1e5", [], {}]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
# A path is an int (picks among the manifest's paths) or a tuple (names one).
MANIFEST_EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 2**16), JSON_VALUES),
        st.tuples(st.just("delete"), st.integers(0, 2**16)),
        st.tuples(st.just("add"), st.integers(0, 2**16), st.text(max_size=8), JSON_VALUES),
    ),
    max_size=3,
)


def json_paths(value, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        paths += json_paths(child, (*prefix, key))
    return paths


def edit_json(document, edits: Sequence[tuple]):
    for operation, where, *argument in edits:
        paths = json_paths(document)[1:]  # never the root itself
        path = where if isinstance(where, tuple) else paths[where % len(paths)]
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if operation == "set":
            parent[path[-1]] = argument[0]
        elif operation == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):  # add
            parent[path[-1]][argument[0]] = argument[1]
    return document


def resign(manifest: dict, tensor_bytes: bytes) -> bytes:
    """A bundle of these members whose checksum matches, as flowcli writes one."""
    manifest = {**manifest, "checksums": {WEIGHTS: "sha256:" + hashlib.sha256(tensor_bytes).hexdigest()}}
    return _zip({MANIFEST: json.dumps(manifest).encode(), WEIGHTS: tensor_bytes})


def load_resigned(original, manifest_edits: list[tuple], tensor_plan: list[tuple], resave: bool) -> TabularFlow | None:
    """The model of a re-signed copy of the bundle, after checking it is whole; None on BundleError."""
    data, model = original
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        tensors = archive.read(WEIGHTS)
    if resave:  # the same weights, re-serialized: the checksum covers the bytes, not the values
        tensors = save_tensors(dict(sorted(model.weights_.items())))
    header = {"header": [range(min(len(tensors), 8 + int.from_bytes(tensors[:8], "little")))]}
    tensors = apply_plan(tensors, tensor_plan, header) if tensor_plan else tensors
    loaded = load_or_bundle_error(resign(edit_json(manifest, manifest_edits), tensors))
    if loaded is None:
        return None
    weights, config = loaded.weights_, loaded.config_
    assert weights.keys() == config.weight_shapes().keys()
    assert all(w.dtype == np.float32 and w.shape == config.weight_shapes()[k] and np.isfinite(w).all() for k, w in weights.items())
    assert loaded.preprocessor_.width == config.features
    if not tensor_plan:
        assert same_weights(weights, model.weights_)
    return loaded


def check_resigned_bundle(original, manifest_edits: list[tuple], tensor_plan: list[tuple], resave: bool) -> None:
    """Loads whole or is a BundleError. Only resigned_bundle_usable, which leaves "dtype" alone,
    also scores and samples: a column whose "dtype" is null or names no pyarrow type loads, and
    then both raise pyarrow's ValueError 'No type alias for none' (an open flowcli bug)."""
    load_resigned(original, manifest_edits, tensor_plan, resave)


def check_resigned_bundle_usable(original, manifest_edits: list[tuple]) -> None:
    """A bundle that loads scores a typical row (−inf at worst, never NaN) and samples numbers: the
    loader bounds the scale and each std, so extreme numbers there are a BundleError."""
    loaded = load_resigned(original, manifest_edits, [], False)
    if loaded is None:
        return
    typical = [(column.low + column.high) / 2 for column in original[1].preprocessor_.columns]
    row = pa.Table.from_arrays([pa.array([value]) for value in typical], names=loaded.columns_)
    with np.errstate(all="ignore"):
        score, sample = loaded.score_samples(row), loaded.sample(2, seed=0)
    assert not np.isnan(score).any() and not np.isnan(sample.to_numpy(dtype=np.float64, na_value=0.0)).any(), (score, sample)


property_test(
    "resigned_bundle", check_resigned_bundle, examples=300, manifest_edits=MANIFEST_EDITS,
    tensor_plan=st.just([]) | mutation_plans(["anywhere", "header"]), resave=st.booleans(),
)

# Numbers a trained model never has, in the fields that enter the arithmetic.
_EXTREMES = st.sampled_from([1e308, -1e308, 5e-324, 1e-300, 1e300, 10**300, 10**400, True, 2**64])
_ARITHMETIC_FIELDS = st.one_of(
    st.tuples(st.just("columns"), st.integers(0, 2), st.sampled_from(["mean", "std", "low", "high", "missing_rate"])),
    st.just(("architecture", "scale_bound")),
)
property_test(
    "resigned_bundle_usable", check_resigned_bundle_usable, examples=15,
    manifest_edits=st.lists(st.tuples(st.just("set"), _ARITHMETIC_FIELDS, _EXTREMES), min_size=1, max_size=2),
    explicit=[
        {"manifest_edits": [("set", ("architecture", "scale_bound"), 1e308)]},
        {"manifest_edits": [("set", ("architecture", "scale_bound"), 10**400)]},
        {"manifest_edits": [("set", ("columns", 0, "std"), 5e-324)]},
    ],
)

# Numbers a float or an int cannot hold ("mean": 10**400, "origin": Infinity): a malformed manifest.
property_test(
    "resigned_bundle_huge_integer", check_resigned_bundle, examples=10,
    manifest_edits=st.one_of(
        st.tuples(st.just("set"), st.tuples(st.just("columns"), st.integers(0, 2), st.sampled_from(["mean", "std", "low", "high"])),
                  st.sampled_from([10**309, -(10**400)])),
        st.tuples(st.just("set"), st.tuples(st.just("columns"), st.integers(0, 2), st.sampled_from(["origin", "span"])),
                  st.sampled_from([float("inf"), float("-inf")])),
    ).map(lambda edit: [edit]),
    tensor_plan=st.just([]), resave=st.just(False),
    explicit=[
        {"manifest_edits": [("set", ("columns", 0, "mean"), 10**400)], "tensor_plan": [], "resave": False},
        {"manifest_edits": [("set", ("columns", 0, "origin"), float("inf"))], "tensor_plan": [], "resave": False},
    ],
)


# ------------------------------------------------------------------- 5. score and sample
@pytest.fixture(scope="module")
def model(original) -> TabularFlow:
    return original[1]


# A row's values: anywhere within ±1e6, or at a fraction of the way through the range seen at fit.
ROWS = st.lists(
    st.lists(st.floats(-1e6, 1e6).map(lambda v: ("value", v)) | st.floats(0, 1).map(lambda f: ("within", f)), min_size=3, max_size=3),
    min_size=1, max_size=40,
)


def rows_matrix(model: TabularFlow, rows: list[list[tuple[str, float]]]) -> np.ndarray:
    ranges = [(column.low, column.high) for column in model.preprocessor_.columns]
    return np.array([
        [value if how == "value" else low + value * (high - low) for (how, value), (low, high) in zip(row, ranges)]
        for row in rows
    ])


def check_scores(model: TabularFlow, rows: list, order: list[int], extra: bool) -> None:
    """One per row, whatever the column order or extra columns, and row by row the same; finite
    when every value lies within the range seen at fit, and never NaN or +inf."""
    x, columns = rows_matrix(model, rows), model.columns_
    frame = pd.DataFrame({columns[j]: x[:, j] for j in order})
    if extra:
        frame["unused"] = "text"
    scores = model.score_samples(frame)
    assert scores.shape == (len(x),) and scores.dtype == np.float64
    within = np.all([(x[:, j] >= c.low) & (x[:, j] <= c.high) for j, c in enumerate(model.preprocessor_.columns)], axis=0)
    assert np.isfinite(scores[within]).all(), scores[within]
    assert not np.isnan(scores).any() and (scores < np.inf).all(), scores
    event("some row outside the range seen at fit" if not within.all() else "all rows within")
    in_order = model.score_samples(pa.table({name: x[:, j] for j, name in enumerate(columns)}))
    np.testing.assert_array_equal(scores, in_order)
    alone = np.array([model.score_samples(pa.table({name: x[i:i + 1, j] for j, name in enumerate(columns)}))[0] for i in range(min(len(x), 3))])
    np.testing.assert_allclose(alone, scores[:len(alone)], rtol=1e-5, atol=1e-5)


def check_samples(model: TabularFlow, n: int, seed: int, batch_rows: int) -> None:
    """n finite rows in the model's columns and types; the same seed, the same rows, in batches or not."""
    frame = model.sample(n, seed=seed)
    assert list(frame.columns) == model.columns_ and len(frame) == n
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert table.schema.types == model.sample_schema.types
    assert np.isfinite(frame.to_numpy(dtype=np.float64)).all()
    pd.testing.assert_frame_equal(model.sample(n, seed=seed), frame)
    batches = list(model.sample_batches(n, seed=seed, batch_rows=batch_rows))
    assert [batch.num_rows for batch in batches][:-1] == [batch_rows] * (len(batches) - 1)
    streamed = pa.Table.from_batches(batches)
    # A batch of another size may round differently in float32: equal up to that, in the flow's units.
    half = np.full((n, model.preprocessor_.width), 0.5)
    encode = model.preprocessor_.encode
    np.testing.assert_allclose(encode(streamed, half)[0], encode(table, half)[0], rtol=1e-4, atol=1e-4)
    assert np.isfinite(model.score_samples(frame)).all()


property_test(
    "score_samples", check_scores, examples=100, rows=ROWS, order=st.permutations([0, 1, 2]), extra=st.booleans(),
)

property_test(
    "sample", check_samples, examples=60, n=st.integers(1, 500), seed=st.integers(0, 2**64), batch_rows=st.integers(1, 600),
)


def check_scores_never_nan(model: TabularFlow, rows: np.ndarray) -> None:
    """Any finite row gets a log-likelihood, or a DataError: −inf at worst, for an outlier so extreme
    that the float32 flow overflows, which then ranks first among the least likely, never NaN."""
    frame = pd.DataFrame({name: rows[:, j] for j, name in enumerate(model.columns_)})
    try:
        with np.errstate(all="ignore"):
            scores = model.score_samples(frame)
    except DataError:
        return
    assert not np.isnan(scores).any(), scores


property_test(
    "score_samples_extreme_rows", check_scores_never_nan, examples=20,
    rows=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.just(3)), elements=st.floats(allow_nan=False, allow_infinity=False)),
    explicit=[{"rows": np.array([[0.5, -3e4, 1e40]])}],
)


def check_sample_any_seed(model: TabularFlow, n: int, seed: int) -> None:
    """Any int seed (the API's type, and `flowcli sample --seed`'s) samples, or is refused as a
    FlowcliError: a negative seed is a DataError, never numpy's ValueError."""
    try:
        frame = model.sample(n, seed=seed)
    except FlowcliError:
        return
    assert len(frame) == n and np.isfinite(frame.to_numpy()).all()


property_test(
    "sample_negative_seed", check_sample_any_seed, examples=10, n=st.integers(1, 5), seed=st.integers(max_value=-1),
    explicit=[{"n": 3, "seed": -1}],
)
