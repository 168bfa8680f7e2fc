"""The .flow bundle: round trips, byte-determinism, atomic writes, and refusal of crafted files.

A bundle may come from a stranger. Every damaged or crafted file must end in a `BundleError`
(a `FlowcliError`) whose message names the file and says what is wrong, never in another
exception, and never run code. Crafted bundles are built by rewriting the members of a real
one (`craft`), so each case states only what it changes.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import pickle
import struct
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from flowcli import TabularFlow
from flowcli.bundle import FORMAT_VERSION, MANIFEST, WEIGHTS, read_bundle, write_bundle
from flowcli.errors import BundleError, FlowcliError, OutputError
from flowcli.explain import RANKING
from flowcli.flow.config import FlowConfig

COLUMNS = ["small", "large", "plain"]
MANIFEST_LIMIT = 16 << 20


# --------------------------------------------------------------------------------- helpers
def small_flow(seed: int = 0) -> TabularFlow:
    return TabularFlow(epochs=2, layers=2, hidden=8, seed=seed, device="cpu")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_members(path: Path) -> dict[str, bytes]:
    """The members of the zip at `path`, in archive order."""
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip holding `members` (name → bytes) as flowcli lays them out: manifest deflated, rest stored."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if name == MANIFEST else zipfile.ZIP_STORED
            archive.writestr(info, data)
    return path


def craft(source: Path, destination: Path, changes: dict[str, bytes | None], *, fix_checksum: bool = False) -> Path:
    """Rewrite `source`'s members into `destination`: `changes` maps a name to new bytes, or to None to drop it.

    With `fix_checksum`, the manifest's weights checksum is recomputed over the (new) weights
    member, so only the checks after the checksum can catch the change.
    """
    members = read_members(source)
    for name, data in changes.items():
        if data is None:
            members.pop(name, None)
        else:
            members[name] = data
    if fix_checksum:
        manifest = json.loads(members[MANIFEST])
        manifest["checksums"][WEIGHTS] = sha256(members[WEIGHTS])
        members[MANIFEST] = json.dumps(manifest, indent=2).encode()
    return write_zip(destination, members)


def edit_manifest(source: Path, destination: Path, edit: Callable[[dict], object]) -> Path:
    """Rewrite `source` with `edit` applied to its parsed manifest; the weights (and checksum) stay valid."""
    manifest = json.loads(read_members(source)[MANIFEST])
    edit(manifest)
    return craft(source, destination, {MANIFEST: json.dumps(manifest, indent=2).encode()})


def assert_column_edits_refused(path: Path, folder: Path, edits: dict[str, tuple[str, Callable[[dict], object]]]) -> None:
    """Each edit (name → (column name, edit of that column's manifest record)) makes `path` a
    bundle that loading refuses as a malformed manifest."""
    from flowcli import TabularFlow

    for name, (column, edit) in edits.items():
        def apply(manifest: dict, column=column, edit=edit) -> None:
            edit(next(entry for entry in manifest["columns"] if entry["name"] == column))
        assert_refused(TabularFlow.load, edit_manifest(path, folder / f"{name}.flow", apply), "manifest")


def edit_weights(source: Path, destination: Path, edit: Callable[[dict], object]) -> Path:
    """Rewrite `source` with `edit` applied to its weights, the checksum recomputed to match."""
    weights = dict(load_tensors(read_members(source)[WEIGHTS]))
    edit(weights)
    return craft(source, destination, {WEIGHTS: save_tensors(weights)}, fix_checksum=True)


def patch_bytes(source: Path, destination: Path, patch: Callable[[bytearray], object]) -> Path:
    """Copy `source` to `destination` with `patch` applied to its raw bytes."""
    data = bytearray(source.read_bytes())
    patch(data)
    destination.write_bytes(bytes(data))
    return destination


def member_data_span(data: bytes, name: str) -> tuple[int, int]:
    """(start, end) of member `name`'s stored (possibly compressed) bytes within the zip `data`."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length
    return start, start + info.compress_size


def central_entry(data: bytes, name: str) -> int:
    """The offset of member `name`'s central-directory record within the zip `data`."""
    offset = data.index(b"PK\x01\x02")
    while data[offset + 46 : offset + 46 + len(name)] != name.encode():
        offset = data.index(b"PK\x01\x02", offset + 4)
    return offset


def assert_refused(load: Callable[[Path], object], path: Path, *fragments: str) -> BundleError:
    """`load(path)` raises a BundleError naming the file and containing every fragment (any case)."""
    with pytest.raises(BundleError) as caught:
        load(path)
    assert isinstance(caught.value, FlowcliError)
    message = str(caught.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"
    return caught.value


def part_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".part"))


def normalized(path: Path) -> list[tuple]:
    """The bundle's members and their zip metadata, with the manifest's `created` value blanked."""
    entries = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == MANIFEST:
                manifest = json.loads(data)
                assert isinstance(manifest.pop("created"), str)
                data = json.dumps(manifest, indent=2).encode()
            entries.append((info.filename, info.date_time, info.compress_type, info.external_attr, info.extra, data))
    return entries


class Clock:
    """Replaces flowcli.model's clock, so `created` is whatever the test sets."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import flowcli.model

        self.now = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
        clock = self

        class FrozenDateTime(datetime.datetime):
            @classmethod
            def now(cls, tz=None):
                return clock.now.astimezone(tz) if tz else clock.now

        fake = types.SimpleNamespace(UTC=datetime.timezone.utc, datetime=FrozenDateTime)
        monkeypatch.setattr(flowcli.model, "datetime", fake)

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


class Payload:
    """A pickle whose loading would create `marker`: proof that nothing unpickles a bundle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any unpickling through the pickle module during the test fails it loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("a bundle was unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


@pytest.fixture(scope="module")
def table(table_csv) -> pd.DataFrame:
    return pd.read_csv(table_csv)


@pytest.fixture(scope="module")
def fitted(table) -> TabularFlow:
    """A tiny model fit once for this module (read-only: tests must not refit or mutate it)."""
    return small_flow().fit(table, columns=COLUMNS)


@pytest.fixture
def crafted(tmp_path) -> Path:
    return tmp_path / "crafted.flow"


LOADERS = [pytest.param(read_bundle, id="read_bundle"), pytest.param(TabularFlow.load, id="TabularFlow.load")]


# --------------------------------------------------------------------------------- round trip
def test_round_trip_scores_samples_and_state_are_identical(fitted, table, tmp_path, monkeypatch):
    Clock(monkeypatch)  # describe() of an unsaved model stamps "now"; hold the clock still
    path = fitted.save(tmp_path / "model.flow")
    loaded = TabularFlow.load(path)

    np.testing.assert_array_equal(loaded.score_samples(table), fitted.score_samples(table))
    pd.testing.assert_frame_equal(loaded.sample(200, seed=7), fitted.sample(200, seed=7), check_exact=True)
    assert loaded.columns_ == fitted.columns_ == COLUMNS
    assert loaded.config_ == fitted.config_
    assert loaded.get_params() == fitted.get_params()
    assert loaded.describe() == fitted.describe()
    np.testing.assert_array_equal(loaded.anomaly_scores(table), fitted.anomaly_scores(table))
    for kept, saved in ((loaded.weights_, fitted.weights_), (loaded.ranking_weights_, fitted.ranking_weights_)):
        assert set(kept) == set(saved)
        for name, value in saved.items():
            assert kept[name].dtype == value.dtype
            np.testing.assert_array_equal(kept[name], value)


def test_round_trip_accepts_str_paths_and_reorders_columns(fitted, table, tmp_path):
    path = fitted.save(str(tmp_path / "model.flow"))
    loaded = TabularFlow.load(str(path))
    shuffled = table[["plain", "id", "large", "small"]]
    np.testing.assert_array_equal(loaded.score_samples(shuffled), fitted.score_samples(table))


def test_loaded_model_resaves_to_identical_bytes(bundle_path, tmp_path):
    again = TabularFlow.load(bundle_path).save(tmp_path / "again.flow")
    assert again.read_bytes() == bundle_path.read_bytes()


def test_read_bundle_returns_manifest_and_float32_weights(bundle_path):
    manifest, weights = read_bundle(bundle_path)
    assert manifest["format"] == "flowcli-bundle"
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["checksums"][WEIGHTS] == sha256(read_members(bundle_path)[WEIGHTS])
    shapes = FlowConfig.from_json(manifest["architecture"]).weight_shapes()
    assert {name: value.shape for name, value in weights.items()} == {**shapes, **{RANKING + name: shape for name, shape in shapes.items()}}
    assert all(value.dtype == np.float32 for value in weights.values())
    assert list(read_members(bundle_path)) == [MANIFEST, WEIGHTS]


def test_describe_matches_loaded_model_after_time_passes(fitted, tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    path = fitted.save(tmp_path / "model.flow")
    clock.advance(60)
    assert TabularFlow.load(path).describe() == fitted.describe()


# --------------------------------------------------------------------------------- determinism
def test_saving_twice_differs_only_in_created(fitted, tmp_path):
    first = fitted.save(tmp_path / "first.flow")
    second = fitted.save(tmp_path / "second.flow")
    assert normalized(first) == normalized(second)


def test_saving_twice_at_the_same_instant_gives_identical_bytes(fitted, tmp_path, monkeypatch):
    clock = Clock(monkeypatch)
    first = fitted.save(tmp_path / "first.flow").read_bytes()
    second = fitted.save(tmp_path / "second.flow").read_bytes()
    assert first == second
    clock.advance(3600)
    third = fitted.save(tmp_path / "third.flow").read_bytes()
    assert third == first  # `created` is when the model was fit, not when it was saved


def test_fitting_twice_with_one_seed_gives_identical_weights(fitted, table, tmp_path):
    again = small_flow(seed=0).fit(table, columns=COLUMNS)
    assert set(again.weights_) == set(fitted.weights_)
    for name, value in fitted.weights_.items():
        np.testing.assert_array_equal(again.weights_[name], value, err_msg=name)
    first = read_members(fitted.save(tmp_path / "first.flow"))
    second = read_members(again.save(tmp_path / "second.flow"))
    assert first[WEIGHTS] == second[WEIGHTS]
    manifests = [json.loads(members[MANIFEST]) for members in (first, second)]
    for manifest in manifests:
        del manifest["created"], manifest["training"]["wall_seconds"]
    assert manifests[0] == manifests[1]


def test_another_seed_gives_other_weights(fitted, table):
    other = small_flow(seed=1).fit(table, columns=COLUMNS)
    assert any(not np.array_equal(other.weights_[name], value) for name, value in fitted.weights_.items())


# --------------------------------------------------------------------------------- writing the file
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_bundle_mode_follows_umask(fitted, tmp_path, umask):
    old = os.umask(umask)
    try:
        path = fitted.save(tmp_path / "model.flow")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert part_files(tmp_path) == []


def test_existing_file_is_kept_without_force(fitted, tmp_path):
    path = tmp_path / "model.flow"
    path.write_bytes(b"old contents")
    with pytest.raises(OutputError, match="already exists") as caught:
        fitted.save(path)
    assert isinstance(caught.value, FlowcliError)
    assert str(path) in str(caught.value) and "force" in str(caught.value)
    assert path.read_bytes() == b"old contents"
    assert part_files(tmp_path) == []


def test_existing_file_is_replaced_with_force(fitted, tmp_path):
    path = tmp_path / "model.flow"
    path.write_bytes(b"old contents")
    fitted.save(path, force=True)
    assert zipfile.is_zipfile(path)
    assert TabularFlow.load(path).config_ == fitted.config_
    assert part_files(tmp_path) == []


def test_input_is_never_overwritten_even_with_force(fitted, tmp_path):
    path = tmp_path / "model.flow"
    path.write_bytes(b"old contents")
    with pytest.raises(OutputError, match="overwrite the input"):
        fitted.save(path, force=True, inputs=(str(path),))
    assert path.read_bytes() == b"old contents"


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_failed_write_leaves_old_file_and_no_temporary(fitted, tmp_path, monkeypatch, existing):
    import flowcli.table.atomic

    def disk_full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(flowcli.table.atomic, "_fsync", disk_full)
    path = tmp_path / "model.flow"
    if existing:
        path.write_bytes(b"old contents")
    with pytest.raises(OutputError, match="No space left"):
        fitted.save(path, force=True)
    assert part_files(tmp_path) == []
    if existing:
        assert path.read_bytes() == b"old contents"
    else:
        assert not path.exists()


def test_missing_folder_is_an_output_error(fitted, tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        fitted.save(tmp_path / "missing" / "model.flow")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_not_written(fitted, tmp_path, bad):
    weights = {name: value.copy() for name, value in fitted.weights_.items()}
    name = sorted(weights)[1]
    weights[name].flat[0] = bad
    path = tmp_path / "model.flow"
    with pytest.raises(BundleError, match="not finite") as caught:
        write_bundle(path, fitted._manifest(), weights)
    assert name in str(caught.value) and str(path) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_weights_do_not_replace_an_existing_file(fitted, tmp_path):
    weights = {name: np.full_like(value, np.nan) for name, value in fitted.weights_.items()}
    path = tmp_path / "model.flow"
    path.write_bytes(b"old contents")
    with pytest.raises(BundleError, match="not finite"):
        write_bundle(path, fitted._manifest(), weights, force=True)
    assert path.read_bytes() == b"old contents"
    assert part_files(tmp_path) == []


# --------------------------------------------------------------------------------- not a bundle at all
NOT_ZIPS = {
    "random-bytes": np.random.default_rng(0).bytes(4096),
    "empty": b"",
    "text": b"small,large,plain\n0.5,-30000,0.1\n",
    "json": b'{"format": "flowcli-bundle", "format_version": 1}',
    "zip-magic-only": b"PK\x03\x04" + bytes(64),
}


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("content", list(NOT_ZIPS.values()), ids=list(NOT_ZIPS))
def test_file_that_is_not_a_zip_is_refused(crafted, load, content):
    crafted.write_bytes(content)
    assert_refused(load, crafted, "not a flowcli bundle")


@pytest.mark.parametrize("load", LOADERS)
def test_missing_path_and_folder_are_refused(tmp_path, load):
    assert_refused(load, tmp_path / "absent.flow", "no such bundle")
    assert_refused(load, tmp_path, "no such bundle")


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("keep", [0.5, 0.1, 0.9, -1, -22], ids=["half", "tenth", "nine-tenths", "last-byte-cut", "eocd-cut"])
def test_truncated_bundle_is_refused(bundle_path, crafted, load, keep):
    data = bundle_path.read_bytes()
    crafted.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[:keep])
    assert_refused(load, crafted)


# --------------------------------------------------------------------------------- damaged contents
@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("where", [0, 0.5, -1], ids=["first", "middle", "last"])
def test_flipped_byte_in_stored_weights_is_refused(bundle_path, crafted, load, where):
    def flip(data: bytearray) -> None:
        start, end = member_data_span(bytes(data), WEIGHTS)
        data[start + int((end - start) * where) if where >= 0 else end - 1] ^= 0x01

    assert_refused(load, patch_bytes(bundle_path, crafted, flip), "damaged")


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("where", [0, 0.5, -1], ids=["header", "middle", "last"])
def test_altered_weights_with_old_manifest_fail_the_checksum(bundle_path, crafted, load, where):
    weights = bytearray(read_members(bundle_path)[WEIGHTS])
    weights[int(len(weights) * where)] ^= 0x01
    craft(bundle_path, crafted, {WEIGHTS: bytes(weights)})
    assert_refused(load, crafted, "checksum")


CHECKSUM_EDITS = {
    "missing": lambda m: m.pop("checksums"),
    "not-a-dict": lambda m: m.update(checksums=["sha256:0"]),
    "empty": lambda m: m.update(checksums={}),
    "wrong-digest": lambda m: m["checksums"].update({WEIGHTS: "sha256:" + "0" * 64}),
    "other-algorithm": lambda m: m["checksums"].update({WEIGHTS: "md5:" + "0" * 32}),
    "not-a-string": lambda m: m["checksums"].update({WEIGHTS: 0}),
}


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("edit", list(CHECKSUM_EDITS.values()), ids=list(CHECKSUM_EDITS))
def test_bad_checksum_entry_is_refused(bundle_path, crafted, load, edit):
    assert_refused(load, edit_manifest(bundle_path, crafted, edit), "checksum")


# --------------------------------------------------------------------------------- unexpected members
@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize(
    "changes",
    [
        {"../evil.txt": b"escaped"},
        {"/tmp/evil.txt": b"absolute"},
        {"data.pkl": b"pickle"},
        {"archive/data.pkl": b"pickle"},
        {"manifest.json.bak": b"{}"},
        {WEIGHTS: None},
        {MANIFEST: None},
        {MANIFEST: None, WEIGHTS: None, "other.txt": b"x"},
    ],
    ids=["traversal", "absolute", "data.pkl", "nested-pkl", "backup", "no-weights", "no-manifest", "unrelated-zip"],
)
def test_unexpected_members_are_refused(bundle_path, crafted, tmp_path, load, changes):
    craft(bundle_path, crafted, changes)
    assert_refused(load, crafted, "unexpected contents")
    assert not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize(
    "where, fix_checksum",
    [(WEIGHTS, False), (WEIGHTS, True), ("data.pkl", False), (MANIFEST, False)],
    ids=["weights-old-checksum", "weights-new-checksum", "extra-member", "as-manifest"],
)
def test_pickle_payload_is_never_executed(bundle_path, crafted, tmp_path, load, where, fix_checksum, no_unpickling):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(marker))
    craft(bundle_path, crafted, {where: payload}, fix_checksum=fix_checksum)
    error = assert_refused(load, crafted)
    if fix_checksum:
        assert "cannot be read" in str(error)
    assert not marker.exists()


@pytest.mark.parametrize("load", LOADERS)
def test_torch_checkpoint_with_payload_is_refused_unexecuted(crafted, tmp_path, load, no_unpickling):
    import torch

    marker = tmp_path / "pwned"
    torch.save({"state": Payload(marker)}, crafted)
    assert zipfile.is_zipfile(crafted)
    assert_refused(load, crafted, "unexpected contents")
    assert not marker.exists()


# --------------------------------------------------------------------------------- hostile manifests
@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000],
    ids=["open-lists", "open-objects", "closed-lists"],
)
def test_deeply_nested_manifest_is_refused(bundle_path, crafted, load, text):
    craft(bundle_path, crafted, {MANIFEST: text.encode()})
    assert_refused(load, crafted, "not valid JSON")


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe not utf-8", b"", b"{truncated", b"[]", b'"a string"', b"null", b"{}", b'{"format": "other"}'],
    ids=["not-utf8", "empty", "truncated", "list", "string", "null", "empty-object", "other-format"],
)
def test_manifest_that_is_not_a_flowcli_manifest_is_refused(bundle_path, crafted, load, content):
    craft(bundle_path, crafted, {MANIFEST: content})
    assert_refused(load, crafted)


@pytest.mark.parametrize("load", LOADERS)
def test_zip_bomb_manifest_over_the_limit_is_refused(bundle_path, crafted, load):
    craft(bundle_path, crafted, {MANIFEST: b" " * (MANIFEST_LIMIT + 1)})
    assert crafted.stat().st_size < 200_000  # small on disk, 16 MiB inflated
    assert_refused(load, crafted, "manifest.json is larger than", str(MANIFEST_LIMIT))


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("declared", [100, MANIFEST_LIMIT], ids=["tiny", "at-limit"])
def test_zip_bomb_manifest_that_lies_about_its_size_is_refused(bundle_path, crafted, load, declared):
    """A zip bomb declaring a small size must not get through on the declared size alone."""
    craft(bundle_path, crafted, {MANIFEST: b" " * (MANIFEST_LIMIT + 1)})

    def lie(data: bytearray) -> None:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
            local = archive.getinfo(MANIFEST).header_offset
        struct.pack_into("<I", data, local + 22, declared)
        struct.pack_into("<I", data, central_entry(bytes(data), MANIFEST) + 24, declared)

    assert_refused(load, patch_bytes(crafted, crafted, lie))


@pytest.mark.parametrize("version", [999, FORMAT_VERSION + 1])
def test_newer_format_version_asks_for_upgrade(bundle_path, crafted, version):
    edit_manifest(bundle_path, crafted, lambda m: m.update(format_version=version))
    for load in (read_bundle, TabularFlow.load):
        assert_refused(load, crafted, "newer", "upgrade", f"format {version}")


@pytest.mark.parametrize(
    "version",
    [0, -1, "1", "999", 1.0, 1.5, None, [1], {"v": 1}],
    ids=["zero", "negative", "string", "string-999", "float-1", "float", "null", "list", "object"],
)
def test_invalid_format_version_is_refused(bundle_path, crafted, version):
    edit_manifest(bundle_path, crafted, lambda m: m.update(format_version=version))
    for load in (read_bundle, TabularFlow.load):
        assert_refused(load, crafted, "invalid format_version")


def test_missing_format_version_is_refused(bundle_path, crafted):
    edit_manifest(bundle_path, crafted, lambda m: m.pop("format_version"))
    assert_refused(TabularFlow.load, crafted, "invalid format_version")


def test_boolean_format_version_is_refused(bundle_path, crafted):
    edit_manifest(bundle_path, crafted, lambda m: m.update(format_version=True))
    assert_refused(read_bundle, crafted, "invalid format_version")


# --------------------------------------------------------------------------------- manifest meaning
@pytest.mark.parametrize("key", ["architecture", "columns", "hyperparameters", "training", "left_out", "data", "versions", "created"])
def test_manifest_missing_a_key_is_refused(bundle_path, crafted, key):
    edit_manifest(bundle_path, crafted, lambda m: m.pop(key))
    assert read_bundle(crafted)[0]["checksums"]  # the container is intact; only the meaning is wrong
    assert_refused(TabularFlow.load, crafted, "malformed", key)


MANIFEST_EDITS = {
    "unknown-hyperparameter": (lambda m: m["hyperparameters"].update(bogus=1), ["malformed", "bogus"]),
    "hyperparameters-list": (lambda m: m.update(hyperparameters=[1, 2]), ["malformed"]),
    "unknown-architecture-key": (lambda m: m["architecture"].update(bogus=1), ["malformed", "bogus"]),
    "architecture-string": (lambda m: m.update(architecture="realnvp"), ["malformed"]),
    "zero-layers": (lambda m: m["architecture"].update(layers=0), ["malformed", "invalid flow configuration"]),
    "string-features": (lambda m: m["architecture"].update(features="3"), ["malformed"]),
    "more-layers": (lambda m: m["architecture"].update(layers=m["architecture"]["layers"] + 1), ["do not match the architecture"]),
    "wider-hidden": (lambda m: m["architecture"].update(hidden=m["architecture"]["hidden"] * 2), ["has shape"]),
    "columns-not-a-list": (lambda m: m.update(columns=7), ["malformed"]),
    "column-kind": (lambda m: m["columns"][0].update(kind="hologram"), ["'hologram' is not supported"]),
    "column-zero-std": (lambda m: m["columns"][0].update(std=0.0), ["invalid standardization"]),
    "column-missing-mean": (lambda m: m["columns"][0].pop("mean"), ["malformed", "mean"]),
    "column-text-std": (lambda m: m["columns"][0].update(std="wide"), ["malformed"]),
    "one-column-fewer": (lambda m: (m["columns"].pop(), m["anomaly"]["knots"].pop(), m["anomaly"]["sides"].pop()), ["make 2 features for a flow of 3"]),
    "anomaly-side-zero": (lambda m: m["anomaly"]["sides"].__setitem__(0, 0), ["malformed", "a side of -1 or 1"]),
    "anomaly-sides-fewer": (lambda m: m["anomaly"]["sides"].pop(), ["malformed", "a side of -1 or 1 for each of 3 columns"]),
    "anomaly-knots-fewer": (lambda m: m["anomaly"]["knots"].pop(), ["malformed", "anomaly needs knots for 3 columns"]),
    "anomaly-knots-none-for-a-number": (lambda m: m["anomaly"]["knots"].__setitem__(0, None), ["malformed", "knots for each number"]),
    "anomaly-knots-unsorted": (lambda m: m["anomaly"]["knots"][0].reverse(), ["malformed", "knots must be finite and ascending"]),
    "anomaly-scale-zero": (lambda m: m["anomaly"]["scales"].__setitem__(0, 0.0), ["malformed", "scales positive"]),
    "training-string": (lambda m: m.update(training="ab"), ["malformed"]),
    "left-out-number": (lambda m: m.update(left_out=3), ["malformed"]),
}


@pytest.mark.parametrize("edit, fragments", list(MANIFEST_EDITS.values()), ids=list(MANIFEST_EDITS))
def test_manifest_with_wrong_meaning_is_refused(bundle_path, crafted, edit, fragments):
    edit_manifest(bundle_path, crafted, edit)
    read_bundle(crafted)  # the container check passes: only TabularFlow.load can tell
    assert_refused(TabularFlow.load, crafted, *fragments)


@pytest.mark.parametrize("columns", [["small"], [None], {"small": 1}, "abc"], ids=["strings", "nulls", "object", "string"])
def test_column_entries_that_are_not_objects_are_refused(bundle_path, crafted, columns):
    edit_manifest(bundle_path, crafted, lambda m: m.update(columns=columns))
    assert_refused(TabularFlow.load, crafted)


def test_huge_declared_architecture_is_refused_without_work_proportional_to_it(bundle_path, crafted, monkeypatch):
    calls = 0
    split = FlowConfig.split

    def counted(self, layer):
        nonlocal calls
        calls += 1
        if calls > 10_000:
            raise AssertionError("load is iterating over the declared 10**9 layers")
        return split(self, layer)

    monkeypatch.setattr(FlowConfig, "split", counted)
    edit_manifest(bundle_path, crafted, lambda m: m["architecture"].update(layers=10**9))
    assert_refused(TabularFlow.load, crafted)


# --------------------------------------------------------------------------------- weights vs architecture
def _transpose_first(weights: dict) -> None:
    name = "couplings.0.linears.0.weight"
    weights[name] = np.ascontiguousarray(weights[name].T)


def _widen_a_bias(weights: dict) -> None:
    name = "couplings.1.linears.2.bias"
    weights[name] = np.concatenate([weights[name], np.zeros(1, np.float32)])


def _drop_one(weights: dict) -> None:
    weights.pop(sorted(weights)[0])


def _add_one(weights: dict) -> None:
    weights["couplings.99.linears.0.weight"] = np.zeros((2, 2), np.float32)


def _to_float64(weights: dict) -> None:
    name = sorted(weights)[0]
    weights[name] = weights[name].astype(np.float64)


def _to_float16(weights: dict) -> None:
    name = sorted(weights)[0]
    weights[name] = weights[name].astype(np.float16)


def _nan(weights: dict) -> None:
    name = sorted(weights)[0]
    weights[name] = weights[name].copy()
    weights[name].flat[0] = np.nan


def _scalar(weights: dict) -> None:
    weights["couplings.0.linears.0.bias"] = np.zeros((), np.float32)


def _ranking(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    """`edit` applied to the ranking weights alone."""
    def edited(weights: dict) -> None:
        ranking = {name.removeprefix(RANKING): weights.pop(name) for name in [name for name in weights if name.startswith(RANKING)]}
        edit(ranking)
        weights.update({RANKING + name: value for name, value in ranking.items()})
    return edited


WEIGHT_EDITS = {
    "transposed": (_transpose_first, "has shape"),
    "wider-bias": (_widen_a_bias, "has shape"),
    "scalar": (_scalar, "has shape"),
    "missing-tensor": (_drop_one, "do not match the architecture"),
    "extra-tensor": (_add_one, "do not match the architecture"),
    "float64": (_to_float64, "float64"),
    "float16": (_to_float16, "float16"),
    "nan": (_nan, "expected finite float32"),
    "empty": (lambda weights: weights.clear(), "do not match the architecture"),
    "ranking-missing-tensor": (_ranking(_drop_one), "do not match the architecture"),
    "ranking-transposed": (_ranking(_transpose_first), "has shape"),
    "ranking-nan": (_ranking(_nan), "expected finite float32"),
}


@pytest.mark.parametrize("edit, fragment", list(WEIGHT_EDITS.values()), ids=list(WEIGHT_EDITS))
def test_weights_disagreeing_with_architecture_are_refused(bundle_path, crafted, edit, fragment):
    edit_weights(bundle_path, crafted, edit)
    read_bundle(crafted)  # checksum recomputed: only the shape/type check can catch it
    assert_refused(TabularFlow.load, crafted, fragment)


@pytest.mark.parametrize("scale", [-800.0, 1e30])
def test_mixture_scales_beyond_bounds_are_refused(crafted, scale):
    """A forged mixture base whose precision factors are finite but far out of range (a singular
    inverse when sampling, NaN when scoring) is refused at load, naming the weight."""
    def extreme(weights: dict) -> None:
        weights["mixture_log_diagonal"] = np.full_like(weights["mixture_log_diagonal"], scale)

    source = Path(__file__).parent / "fixtures" / "format_v6" / "model.flow"
    assert TabularFlow.load(source).config_.base == "mixture"
    edit_weights(source, crafted, extreme)
    assert_refused(TabularFlow.load, crafted, "mixture_log_diagonal")


@pytest.mark.parametrize("content", [b"", b"\x00" * 8, b"\xff" * 64, struct.pack("<Q", 1 << 40) + b"{}"], ids=["empty", "zero-header", "garbage", "huge-header"])
def test_unreadable_safetensors_with_valid_checksum_is_refused(bundle_path, crafted, content):
    craft(bundle_path, crafted, {WEIGHTS: content}, fix_checksum=True)
    for load in (read_bundle, TabularFlow.load):
        assert_refused(load, crafted, "cannot be read")


# --------------------------------------------------------------------------------- zip-level damage (bugs)
def _garble_manifest_stream(data: bytearray) -> None:
    start, end = member_data_span(bytes(data), MANIFEST)
    data[start:end] = b"\xff" * (end - start)  # deflate block type 3 is invalid


def _central_directory_offset_past_start(data: bytearray) -> None:
    eocd = bytes(data).rindex(b"PK\x05\x06")
    (offset,) = struct.unpack_from("<I", data, eocd + 16)
    struct.pack_into("<I", data, eocd + 16, offset + 0x10000)


def _mark_manifest_encrypted(data: bytearray) -> None:
    data[central_entry(bytes(data), MANIFEST) + 8] |= 0x01  # general-purpose flag bit 0: encrypted


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize(
    "patch",
    [_garble_manifest_stream, _central_directory_offset_past_start, _mark_manifest_encrypted],
    ids=["corrupt-deflate-zlib.error", "bad-cd-offset-OSError", "encrypted-flag-RuntimeError"],
)
def test_zip_level_damage_is_a_bundle_error(bundle_path, crafted, load, patch):
    assert_refused(load, patch_bytes(bundle_path, crafted, patch))


def test_every_single_byte_flip_is_refused_or_harmless(fitted, tmp_path):
    """Flip each byte of a small bundle: loading either gives the same weights or raises BundleError.

    """
    source = fitted.save(tmp_path / "model.flow")
    data = source.read_bytes()
    target = tmp_path / "flipped.flow"
    weights_start, weights_end = member_data_span(data, WEIGHTS)
    stored_weights = range(weights_start + 64, weights_end - 64)  # past the safetensors header: all alike
    unexpected = {}
    for index in range(len(data)):
        if index in stored_weights and index % 31:
            continue
        flipped = bytearray(data)
        flipped[index] ^= 0xFF
        target.write_bytes(bytes(flipped))
        try:
            loaded = TabularFlow.load(target)
        except BundleError:
            continue
        except Exception as error:  # noqa: BLE001 - collect every escape, to report them at once
            unexpected[index] = repr(error)
            continue
        for name, value in fitted.weights_.items():
            np.testing.assert_array_equal(loaded.weights_[name], value)
        assert loaded.columns_ == fitted.columns_ and loaded.config_ == fitted.config_
    assert unexpected == {}


# ------------------------------------------------------------- sizes known from the architecture
ORIGINAL_OPEN = zipfile.ZipFile.open


def test_weights_larger_than_the_architecture_needs_are_refused_unread(bundle_path, crafted, monkeypatch):
    members = read_members(bundle_path)
    craft(bundle_path, crafted, {WEIGHTS: members[WEIGHTS] + b"\0" * (4 << 20)}, fix_checksum=True)
    read = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: read.append(name) or ORIGINAL_OPEN(self, name, *a, **k))
    assert_refused(TabularFlow.load, crafted, "weights.safetensors is larger than")
    assert WEIGHTS not in read  # refused on the declared size, before a byte of it was read


def test_deflated_weights_are_refused_as_a_compression_flowcli_never_writes(bundle_path, crafted):
    members = read_members(bundle_path)
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    assert_refused(TabularFlow.load, crafted, "compression flowcli never writes")


def test_a_manifest_that_inflates_far_more_than_json_does_is_refused(bundle_path, crafted):
    craft(bundle_path, crafted, {MANIFEST: b"{" + b" " * (8 << 20) + b"}"})  # 8 MiB of blanks, a few KiB on disk
    assert crafted.stat().st_size < 100_000
    assert_refused(TabularFlow.load, crafted, "inflates")
