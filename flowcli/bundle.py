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
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from flowcli.errors import BundleError
from flowcli.table.atomic import atomic_path

FORMAT = "flowcli-bundle"
FORMAT_VERSION = 6  # 3: linear mixing between couplings; 4: a Student-t base; 5: a multivariate t base; 6: a mixture base
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
_MAX_BYTES = {MANIFEST: 16 << 20, WEIGHTS: 4 << 30}
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


def read_bundle(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and the weights of the bundle at `path`, after checking format and checksums."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle; give a .flow file written by `flowcli fit`")
    try:
        with zipfile.ZipFile(path) as archive:
            if sorted(archive.namelist()) != sorted((MANIFEST, WEIGHTS)):
                raise BundleError(f"{path}: not a flowcli bundle (unexpected contents); give a .flow file written by `flowcli fit`")
            manifest_bytes = _read_member(archive, MANIFEST, path)
            tensor_bytes = _read_member(archive, WEIGHTS, path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError, NotImplementedError) as error:
        # Damage anywhere in the zip structure surfaces as one of these, depending on where it hit.
        raise BundleError(f"{path}: not a flowcli bundle or damaged ({error}); give a .flow file written by `flowcli fit`") from None
    manifest = _parse_manifest(manifest_bytes, path)
    expected = manifest.get("checksums", {}).get(WEIGHTS) if isinstance(manifest.get("checksums"), dict) else None
    if expected != _sha256(tensor_bytes):
        raise BundleError(f"{path}: the weights fail their checksum; the file is damaged or was altered")
    try:
        weights = load_tensors(tensor_bytes)
    except (SafetensorError, ValueError, TypeError) as error:
        raise BundleError(f"{path}: the weights cannot be read ({error})") from None
    return manifest, weights


def _read_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    """Read one member, refusing one larger than its limit (zip bombs declare small sizes, too)."""
    limit = _MAX_BYTES[name]
    if archive.getinfo(name).compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError(f"{path}: {name} uses a compression flowcli never writes; this is not a bundle flowcli wrote")
    if archive.getinfo(name).file_size > limit:
        raise BundleError(f"{path}: {name} is larger than {limit} bytes; this is not a bundle flowcli wrote")
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
