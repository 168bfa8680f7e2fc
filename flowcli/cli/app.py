"""The `flowcli` command: thin Typer commands over `flowcli.files` and `flowcli.evaluate`.

Only this module knows about typer and exit codes: 0 success, 1 a FlowcliError (one
`error:` line on stderr), 2 a usage error. Heavy imports (numpy, pyarrow, torch) happen
inside the commands, so `flowcli --help` starts fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from flowcli import __version__
from flowcli.flow import registry

app = typer.Typer(
    name="flowcli",
    help="Learn the density of a table with a RealNVP normalizing flow; score rows, sample new ones.",
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    csv = "csv"
    parquet = "parquet"


Coupling = Enum("Coupling", {name: name for name in ("auto", *registry.COUPLINGS)}, type=str)
Base = Enum("Base", {name: name for name in registry.BASES}, type=str)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on stderr except errors.")]
Force = Annotated[bool, typer.Option("--force", help="Replace OUTPUT if it exists.")]
FormatOption = Annotated[Optional[Format], typer.Option("--format", help="Input format; default: by suffix, csv for '-'.")]
# What sniffing a CSV cannot know (see flowcli.table.dialect).
Delimiter = Annotated[Optional[str], typer.Option("--delimiter", "-d", help="CSV field delimiter: one character, or 'tab' [default: sniffed among , ; tab |].", rich_help_panel="CSV", show_default=False)]
NoHeader = Annotated[bool, typer.Option("--no-header", help="The CSV has no header row: columns are named f0, f1, … (a model fitted so reads score input so too).", rich_help_panel="CSV")]
Decimal = Annotated[Optional[str], typer.Option("--decimal", help="Decimal mark of CSV numbers, '.' or ',' [default: ',' where that is unambiguous, as in 7,4 with ';' separators].", rich_help_panel="CSV", show_default=False)]
Encoding = Annotated[Optional[str], typer.Option("--encoding", help="Text encoding of the CSV, such as cp1252 or latin-1 [default: UTF-8, or UTF-16/32 by a byte-order mark].", rich_help_panel="CSV", show_default=False)]
BundleArgument = Annotated[Path, typer.Argument(help="A .flow bundle written by `flowcli fit`.", show_default=False)]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a FlowcliError into one `error:` line on stderr and exit status 1."""
    from flowcli.cli.console import print_error
    from flowcli.errors import FlowcliError

    try:
        yield
    except FlowcliError as error:
        print_error(str(error))
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        print_error("interrupted; no output file was written")
        raise typer.Exit(code=130) from None


def _names(option: str | None) -> list[str]:
    """A comma-separated option's names, stripped."""
    return [name.strip() for name in (option or "").split(",") if name.strip()]


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"flowcli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    context: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Learn the density of a table with a RealNVP normalizing flow; score rows, sample new ones."""
    if context.invoked_subcommand is None:
        typer.echo(context.get_help())
        raise typer.Exit(code=2)


@app.command()
def fit(
    data: Annotated[str, typer.Argument(help="CSV or Parquet table; '-' reads stdin.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Bundle to write [default: DATA.flow].")] = None,
    format: FormatOption = None,
    columns: Annotated[Optional[str], typer.Option(help="Comma-separated columns to model [default: every one it can].")] = None,
    categorical: Annotated[Optional[str], typer.Option(help="Columns to model as categories.", rich_help_panel="Column kinds")] = None,
    integer: Annotated[Optional[str], typer.Option(help="Columns to model as integers.", rich_help_panel="Column kinds")] = None,
    continuous: Annotated[Optional[str], typer.Option(help="Columns to model as real numbers.", rich_help_panel="Column kinds")] = None,
    datetime: Annotated[Optional[str], typer.Option(help="Columns to model as dates or times (ISO 8601 text).", rich_help_panel="Column kinds")] = None,
    ignore: Annotated[Optional[str], typer.Option(help="Columns to leave out.", rich_help_panel="Column kinds")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Most passes over the training rows.")] = 500,
    max_time: Annotated[Optional[float], typer.Option(min=0.001, help="Wall-clock cap on the whole fit, reading the table included, in seconds.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Rows per step [default: sized from the data].")] = None,
    lr: Annotated[float, typer.Option(min=1e-12, help="Adam learning rate.")] = 1.5e-3,
    layers: Annotated[Optional[int], typer.Option(min=1, help="Coupling layers [default: 8].")] = None,
    hidden: Annotated[Optional[int], typer.Option(min=1, help="Units per hidden layer [default: sized from the data].")] = None,
    coupling: Annotated[Coupling, typer.Option(help="Elementwise map of each coupling: RealNVP's affine, a rational-quadratic spline, or auto: affine, then with --max-time, on the time left, an affine flow on a Gaussian mixture base (when a mixture fitted to the rows validates better than the first flow) and a spline flow, keeping the best on validation.")] = Coupling.auto,
    base: Annotated[Base, typer.Option(help="The flow's base density: the standard normal (with --coupling auto, a flow on a Gaussian mixture base is tried too when a mixture fitted to the rows validates better than the first flow); a Gaussian mixture always, fitted to the rows before training (not under torchrun); or, for heavy-tailed data, a multivariate Student-t or a Student-t per feature, whose degrees of freedom are learned (better likelihoods there; far-tail samples are clipped to, or drawn again near, the range seen at fit).")] = Base.normal,
    val_fraction: Annotated[float, typer.Option(min=0.001, max=0.9, help="Share of rows held out for validation.")] = 0.1,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without a better validation NLL.")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Seed for the split, initialization and shuffling.")] = 0,
    device: Annotated[Device, typer.Option(envvar="FLOWCLI_DEVICE", help="Where to train; auto takes CUDA when available.")] = Device.auto,
    log_json: Annotated[Optional[Path], typer.Option("--log-json", help="Append one JSON object per epoch to this file.")] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", min=1, help="Train on a uniform sample of at most N rows, drawn in one streaming pass (for tables larger than memory).", show_default=False)] = None,
    condition: Annotated[Optional[str], typer.Option(help="Comma-separated category or boolean columns to fit the flow conditioning on: sample --given on them then draws exactly at the cost of unconditional rows, however rare the levels (normal base only).")] = None,
    delimiter: Delimiter = None,
    no_header: NoHeader = False,
    decimal: Decimal = None,
    encoding: Encoding = None,
    quiet: Quiet = False,
    force: Force = False,
) -> None:
    """Learn the joint distribution of DATA's columns and write a .flow bundle.

    Kinds (continuous, integer, categorical, boolean, datetime) are inferred; identifiers and
    free text are left out with a warning. Example: flowcli fit data.csv --max-time 60
    """
    started = time.perf_counter()  # --max-time counts reading the table too
    if data == "-" and output is None:
        raise typer.BadParameter("reading stdin needs -o/--output for the bundle", param_hint="'-o'")
    from flowcli.cli.console import epoch_log, every, fit_progress, print_note, warnings_to_stderr
    from flowcli.cli.interrupt import first_interrupt_stops
    from flowcli.cli.report import fit_summary
    from flowcli.files import default_bundle_path, fit_file
    from flowcli.parallel.torchrun import rank

    output = output or default_bundle_path(data)
    if rank() > 0:  # under torchrun, rank 0 alone reports
        quiet, log_json = True, None
    hyperparameters = dict(
        epochs=epochs, max_time=max_time, batch_size=batch_size, lr=lr, layers=layers, hidden=hidden, coupling=coupling.value, base=base.value,
        val_fraction=val_fraction, patience=patience, seed=seed, device=device.value, condition=tuple(_names(condition)),
    )
    kinds = {name: kind for kind, names in (("categorical", categorical), ("integer", integer),
             ("continuous", continuous), ("datetime", datetime)) for name in _names(names)}
    with user_errors(), warnings_to_stderr(quiet=quiet), first_interrupt_stops() as stop_requested:
        with fit_progress(quiet=quiet) as draw, epoch_log(log_json) as log:
            on_epoch = every(draw, log)
            model = fit_file(
                data, output, format=format and format.value, columns=_names(columns) if columns is not None else None,
                kinds=kinds, ignore=_names(ignore), force=force,
                hyperparameters=hyperparameters, on_epoch=on_epoch, stop_requested=stop_requested, max_rows=max_rows,
                csv=_csv_options(delimiter, no_header, decimal, encoding), started=started,
            )
        stop_requested.written()
        summary = fit_summary(model.describe(), output)
        if stop_requested():
            print_note(f"interrupted: {summary}", quiet=False)
            raise typer.Exit(code=130)
        print_note(summary, quiet=quiet)


@app.command()
def score(
    model: BundleArgument,
    data: Annotated[str, typer.Argument(help="CSV or Parquet table; '-' reads stdin.")] = "-",
    output: Annotated[str, typer.Option("-o", "--output", help="CSV or Parquet by suffix; '-' writes CSV to stdout.")] = "-",
    format: FormatOption = None,
    with_input: Annotated[bool, typer.Option("--with-input", help="Put the input columns before the score.")] = False,
    percentile: Annotated[bool, typer.Option("--percentile", help="Add anomaly_score and the share (%) of validation rows at fit that were more anomalous.", rich_help_panel="Anomalies")] = False,
    threshold: Annotated[Optional[float], typer.Option(min=0, max=100, help="Keep only rows below this percentile (adds anomaly_score and the percentile).", rich_help_panel="Anomalies")] = None,
    top: Annotated[Optional[int], typer.Option(min=1, help="Keep only the K most anomalous rows, most anomalous first (adds anomaly_score).", rich_help_panel="Anomalies")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Add the column whose value the rest of the row makes most surprising, and by how many nats beyond its usual (one more pass per column).", rich_help_panel="Anomalies")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on a category never seen at fit (else it scores -inf) or a number or date outside the range seen at fit (else it scores past the range's edge), naming the column.")] = False,
    given: Annotated[Optional[str], typer.Option("--given", metavar="COLS", help="Score each row given these comma-separated columns: log p(the other columns | these), by importance sampling over the others (--percentile then ranks among rows the model samples).", show_default=False)] = None,
    delimiter: Delimiter = None,
    no_header: NoHeader = False,
    decimal: Decimal = None,
    encoding: Encoding = None,
    dask: Annotated[Optional[str], typer.Option("--dask", metavar="SCHEDULER", help="Score on a Dask cluster (tcp://host:8786, or 'local' to start one): DATA is Parquet files (a glob or a folder), -o a folder that gets one Parquet file per partition. Needs: pip install 'flowcli\\[dask]'.", rich_help_panel="Scale")] = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Write the log-likelihood of every row of DATA, in input order.

    The column `log_likelihood` is the natural log of the density in the units of the
    model's columns. Example: flowcli score data.flow new.csv --with-input --top 20
    """
    from flowcli.cli.console import row_progress, warnings_to_stderr
    from flowcli.files import score_file

    if dask is not None:
        _score_on_dask(model, data, output, dask, format=format and format.value, top=top, force=force, quiet=quiet,
                       with_input=with_input, percentile=percentile, threshold=threshold, explain=explain, strict=strict,
                       given=given)
        return
    with user_errors(), warnings_to_stderr(quiet=quiet), row_progress("score", None, quiet=quiet) as on_rows:
        score_file(model, data, output, format=format and format.value, with_input=with_input, percentile=percentile,
                   threshold=threshold, top=top, explain=explain, strict=strict, given=_names(given), force=force,
                   on_rows=on_rows, csv=_csv_options(delimiter, no_header, decimal, encoding))


def _score_on_dask(model: Path, data: str, output: str, scheduler: str, *, top: int | None, quiet: bool,
                   **options) -> None:
    """`score --dask`: the usage checks here, the work in `flowcli.dask_scoring` (which imports Dask)."""
    if output == "-":
        raise typer.BadParameter("--dask writes a folder of Parquet files; name it with -o", param_hint="'--dask'")
    if data == "-":
        raise typer.BadParameter("--dask reads Parquet files the workers can open, not stdin", param_hint="'--dask'")
    if top is not None:
        raise typer.BadParameter("--top needs every row in one place; use --threshold with --dask", param_hint="'--top'")
    if options.pop("given"):
        raise typer.BadParameter("--given does not run on Dask yet; score without --dask", param_hint="'--given'")
    from flowcli.cli.console import print_note, warnings_to_stderr

    with user_errors(), warnings_to_stderr(quiet=quiet):
        from flowcli.dask_scoring import score_to_folder

        files, rows = score_to_folder(model, data, output, scheduler=scheduler, **options)
    print_note(f"wrote {output}: {files} Parquet file{'s' * (files != 1)}, {rows:,} rows", quiet=quiet)


@app.command()
def sample(
    model: BundleArgument,
    num_samples: Annotated[Optional[int], typer.Option("-n", "--num-samples", min=1, help="How many rows to write (not with --given-file).", show_default=False)] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="CSV or Parquet by suffix; '-' writes CSV to stdout.")] = "-",
    seed: Annotated[Optional[int], typer.Option(min=0, help="The same seed gives the same rows [default: random].")] = None,
    given: Annotated[Optional[list[str]], typer.Option("--given", help="A condition every row meets: col=value, col=a|b (categories), col>=v, col<v (repeat the option for more).", rich_help_panel="Conditions", show_default=False)] = None,
    given_file: Annotated[Optional[str], typer.Option("--given-file", help="CSV or Parquet of conditions: one output row per row, keeping its values; a blank cell leaves that column free.", rich_help_panel="Conditions", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="With conditions, report how the rows were drawn (and the effective sample size behind them) on stderr.")] = False,
    delimiter: Delimiter = None,
    no_header: NoHeader = False,
    decimal: Decimal = None,
    encoding: Encoding = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Write synthetic rows with the original column names, in the original units.

    Example: flowcli sample data.flow -n 10000 -o synth.parquet --given region=north
    """
    if (num_samples is None) == (given_file is None):
        raise typer.BadParameter("give -n for the number of rows, or --given-file for one row per row of a table (not both)", param_hint="'-n'")
    if given and given_file is not None:
        raise typer.BadParameter("--given and --given-file do not combine; put the shared conditions in the file", param_hint="'--given'")
    from flowcli.cli.console import print_note, row_progress, warnings_to_stderr
    from flowcli.condition.conditions import parse_expressions
    from flowcli.files import sample_file

    with user_errors(), warnings_to_stderr(quiet=quiet), row_progress("sample", num_samples, quiet=quiet) as on_rows:
        fitted = sample_file(model, num_samples, output, seed=seed, given=parse_expressions(given) if given else None,
                             given_file=given_file, force=force, on_rows=on_rows,
                             csv=_csv_options(delimiter, no_header, decimal, encoding))
    if verbose and (given or given_file is not None):
        print_note(fitted.effort_.describe(), quiet=quiet)


@app.command()
def inspect(
    model: BundleArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the report.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also draw training curves, marginals and correlations into this PNG.")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="With --plot: take the real side from this table.")] = None,
    force: Force = False,
) -> None:
    """Show what a bundle holds: columns, preprocessing, architecture and training.

    Example: flowcli inspect data.flow --plot diagnostics.png
    """
    from flowcli.cli.report import render_report
    from flowcli.model import TabularFlow

    if data is not None and plot is None:
        raise typer.BadParameter("--data only goes with --plot", param_hint="'--data'")
    with user_errors():
        loaded = TabularFlow.load(model)
        description = loaded.describe()
        if plot is not None:
            from flowcli.cli.plots import plot_diagnostics
            from flowcli.table.io import read_table

            plot_diagnostics(loaded, plot, real=read_table(data) if data is not None else None, force=force)
    sys.stdout.write(json.dumps(description, indent=2) + "\n" if as_json else render_report(description, str(model)))


@app.command()
def evaluate(
    model: BundleArgument,
    train: Annotated[str, typer.Option("--train", help="The rows the model was fitted on (CSV or Parquet).", show_default=False)],
    holdout: Annotated[str, typer.Option("--holdout", help="Real rows of the same kind the model never saw.", show_default=False)],
    synthetic: Annotated[Optional[str], typer.Option("--synthetic", help="Synthetic rows to judge [default: sampled from the model].", show_default=False)] = None,
    num_samples: Annotated[Optional[int], typer.Option("-n", "--num-samples", min=1, help="Rows to sample when there is no --synthetic [default: as many as --train has].", show_default=False)] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed for the sampled rows and the detection classifier.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the report.")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write the report, with its plots, as one HTML file. Needs: pip install 'flowcli\\[plot]'.", show_default=False)] = None,
    max_membership_auc: Annotated[Optional[float], typer.Option(min=0, max=1, help="Fail when the likelihood tells training rows from holdout rows better than this ROC AUC.", rich_help_panel="Gates", show_default=False)] = None,
    min_quality: Annotated[Optional[float], typer.Option(min=0, max=1, help="Fail when the quality score is lower.", rich_help_panel="Gates", show_default=False)] = None,
    max_detection_auc: Annotated[Optional[float], typer.Option(min=0, max=1, help="Fail when a classifier tells holdout from synthetic rows better than this ROC AUC.", rich_help_panel="Gates", show_default=False)] = None,
    max_exact_copies: Annotated[Optional[float], typer.Option(min=0, max=1, help="Fail when a larger share of synthetic rows are copies of training rows.", rich_help_panel="Gates", show_default=False)] = None,
    delimiter: Delimiter = None,
    no_header: NoHeader = False,
    decimal: Decimal = None,
    encoding: Encoding = None,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Report how faithful and how private a model and its synthetic rows are.

    Likelihood (membership AUC), privacy (exact copies, distance to the closest training
    record) and fidelity (SDMetrics' quality score, a detection AUC). A failed gate exits 1
    after the report is written. Example: flowcli evaluate data.flow --train train.csv --holdout test.csv
    """
    from flowcli.cli.console import warnings_to_stderr
    from flowcli.cli.report import render_evaluation
    from flowcli.evaluate import Gates, evaluate_files

    with user_errors(), warnings_to_stderr(quiet=quiet):
        gates = Gates(max_membership_auc, min_quality, max_detection_auc, max_exact_copies)
        report = evaluate_files(model, train, holdout, synthetic, n=num_samples, seed=seed, html=html, force=force,
                                csv=_csv_options(delimiter, no_header, decimal, encoding)).report
        sys.stdout.write(json.dumps(report, indent=2) + "\n" if as_json else render_evaluation(report, str(model)))
        sys.stdout.flush()
        failed = gates.failures(report)
        if failed:
            from flowcli.errors import FlowcliError

            raise FlowcliError("; ".join(failed))


def _csv_options(delimiter: str | None, no_header: bool, decimal: str | None, encoding: str | None):
    """The CSV flags as `CsvOptions` ('tab' or '\\t' for a tab); None when none was given."""
    if delimiter is None and not no_header and decimal is None and encoding is None:
        return None
    from flowcli.table.dialect import CsvOptions

    delimiter = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
    return CsvOptions(delimiter=delimiter, header=not no_header, decimal=decimal, encoding=encoding)


def main() -> None:
    """The console-script entry point: usage errors become one `error:` line and exit 2."""
    threads = os.environ.get("FLOWCLI_THREADS")
    if threads:
        # Read by numpy's BLAS and torch when they load, which is after this point.
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = threads
    try:
        status = app(standalone_mode=False)
    except typer.TyperException as error:  # a usage error: a bad option value, a missing argument
        from flowcli.cli.console import print_error

        command = " ".join(sys.argv[1:2]) if sys.argv[1:2] and not sys.argv[1].startswith("-") else ""
        print_error(f"{error.format_message()} (see: flowcli {command} -h)".replace("  ", " "))
        status = getattr(error, "exit_code", 2)
    except typer.Abort:
        status = 1
    except BrokenPipeError:
        # `| head` closed stdout: stop quietly, as Python's note on SIGPIPE advises, and keep the
        # interpreter from failing to flush stdout again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    sys.exit(status or 0)
