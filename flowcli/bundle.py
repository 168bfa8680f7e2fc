"""The .flow file: a zip holding a JSON manifest and the weights as safetensors. No pickle.

A bundle may come from a stranger, so reading one only ever parses JSON and raw tensors,
with bounded sizes, a known set of member names, a format version and a SHA-256 checksum.
This module knows the container; `model` knows what the manifest means.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from flowcli.errors import BundleError
from flowcli.table.atomic import atomic_path

FORMAT = "flowcli-bundle"
FORMAT_VERSION = 17  # 3: linear mixing between couplings; 4: a Student-t base; 5: a multivariate t base; 6: a mixture base;
# 7: grids dequantized, maps with linear tails past the fit range, datetimes without a log; 8: whole-number levels' gaps;
# 9: the anomaly score's reference; 10: a numeric column's atoms (heaped cells widened);
# 11: category columns linked to a parent (`encode.links`); 12: the anomaly score's column tails per column (`explain`)
# and a linked column's second parent; 13: numeric columns standardized at a category's level (`encode.scales`);
# 14: the column tails of a category of numbers counted along their order (`explain`);
# 15: the ranking weights (the fit's after its first epoch), which the anomaly score's −log p is of (`explain`);
# 16: held features, of the columns a model is fitted to condition on (`FlowConfig.held`, `condition.declared`);
# 17: their columns' level slices, whose one-hot levels every coupling reads (`FlowConfig.held_levels`, `flow.level_inputs`)
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
_MAX_BYTES = {MANIFEST: 16 << 20, WEIGHTS: 4 << 30}
# A manifest inflates at most this many times (flowcli's compress about 3.5 times), so that
# reading any file takes memory of a small multiple of its size: a zip bomb is refused unread.
_MAX_MANIFEST_RATIO = 32
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entry dates, so equal contents give equal bytes


def write_bundle(
    path: Path, manifest: dict, weights: dict[str, np.ndarray], *, force: bool = False, inputs: Iterable[str] = ()
) -> None:
    """Write `manifest` (JSON-able) and `weights` to `path` atomically; refuses non-finite weights."""
    broken = [name for name, value in weights.items() if not np.isfinite(value).all()]
    if broken:
        raise BundleError(f"{path}: not written, because weights {', '.join(broken[:3])} are not finite")
    tensor_bytes = save_tensors(dict(sorted(weights.items())))
    manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "checksums": {WEIGHTS: _sha256(tensor_bytes)}}
    manifest_bytes = json.dumps(manifest, indent=2, allow_nan=False).encode()
    with atomic_path(Path(path), force=force, inputs=inputs) as temporary:
        with zipfile.ZipFile(temporary, "w") as archive:
            for name, data, compression in (
                (MANIFEST, manifest_bytes, zipfile.ZIP_DEFLATED),
                (WEIGHTS, tensor_bytes, zipfile.ZIP_STORED),
            ):
                member = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
                member.compress_type = compression
                archive.writestr(member, data)


def read_bundle(path: Path, weights_bytes: Callable[[dict], int] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and the weights of the bundle at `path`, after checking format and checksums.

    The weights member must be stored uncompressed, as flowcli writes it, and no larger than
    `weights_bytes(manifest)` says the manifest's architecture needs: both are checked before
    a byte of it is read."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle; give a .flow file written by `flowcli fit`")
    try:
        with zipfile.ZipFile(path) as archive:
            if sorted(archive.namelist()) != sorted((MANIFEST, WEIGHTS)):
                raise BundleError(f"{path}: not a flowcli bundle (unexpected contents); give a .flow file written by `flowcli fit`")
            manifest_bytes = _read_member(archive, MANIFEST, path)
            manifest = _parse_manifest(manifest_bytes, path)
            tensor_bytes = _read_member(archive, WEIGHTS, path, _weights_limit(manifest, weights_bytes, path))
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError, NotImplementedError) as error:
        # Damage anywhere in the zip structure surfaces as one of these, depending on where it hit.
        raise BundleError(f"{path}: not a flowcli bundle or damaged ({error}); give a .flow file written by `flowcli fit`") from None
    expected = manifest.get("checksums", {}).get(WEIGHTS) if isinstance(manifest.get("checksums"), dict) else None
    if expected != _sha256(tensor_bytes):
        raise BundleError(f"{path}: the weights fail their checksum; the file is damaged or was altered")
    try:
        weights = load_tensors(tensor_bytes)
    except (SafetensorError, ValueError, TypeError) as error:
        raise BundleError(f"{path}: the weights cannot be read ({error})") from None
    return manifest, weights


def _weights_limit(manifest: dict, weights_bytes: Callable[[dict], int] | None, path: Path) -> int:
    if weights_bytes is None:
        return _MAX_BYTES[WEIGHTS]
    try:
        return min(_MAX_BYTES[WEIGHTS], weights_bytes(manifest))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise BundleError(f"{path}: the manifest's architecture is malformed ({type(error).__name__}: {error})") from None


def _read_member(archive: zipfile.ZipFile, name: str, path: Path, limit: int | None = None) -> bytes:
    """Read one member, refusing before reading it one larger than its limit (zip bombs declare
    small sizes, too, so the read stops at the limit as well), one compressed in a way flowcli
    never writes (the weights are stored, the manifest deflated), or a manifest that inflates
    more than `_MAX_MANIFEST_RATIO` times."""
    limit = _MAX_BYTES[name] if limit is None else limit
    info = archive.getinfo(name)
    allowed = (zipfile.ZIP_STORED,) if name == WEIGHTS else (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
    if info.compress_type not in allowed:
        raise BundleError(f"{path}: {name} uses a compression flowcli never writes; this is not a bundle flowcli wrote")
    if info.file_size > limit:
        raise BundleError(f"{path}: {name} is larger than {limit} bytes, what a bundle of this manifest holds; "
                          "this is not a bundle flowcli wrote")
    if name == MANIFEST and info.file_size > max(1 << 20, _MAX_MANIFEST_RATIO * info.compress_size):
        raise BundleError(f"{path}: {name} inflates {info.file_size // max(info.compress_size, 1)} times; "
                          "this is not a bundle flowcli wrote")
    with archive.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{path}: {name} is larger than {limit} bytes; this is not a bundle flowcli wrote")
    return data


def _parse_manifest(data: bytes, path: Path) -> dict:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise BundleError(f"{path}: the manifest is not valid JSON ({type(error).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a flowcli bundle (no flowcli manifest); give a .flow file written by `flowcli fit`")
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:
        raise BundleError(f"{path}: the manifest has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: written in bundle format {version} by a newer flowcli; this one reads up to "
            f"format {FORMAT_VERSION}, so upgrade flowcli"
        )
    return manifest


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
