"""Export an adapter version as one archive, and import one from another site with every check a site needs.

An import is refused, leaving the registry as it was, unless: the archive is a tar.gz whose members are plain files
under one folder (no absolute paths, '..', links or devices) with known names; the manifest is for this FM and was
trained on these exact base weights; every file matches the SHA-256 the manifest records; the weights are
safetensors (never a pickle); and every tensor name and shape fits this FM.
"""

from __future__ import annotations

import copy
import json
import tarfile
import tempfile
from pathlib import Path

from safetensors import safe_open
from torch import nn

from .adapter_store import MANIFEST, PEFT_CONFIG, PEFT_WEIGHTS, STATE_WEIGHTS, AdapterStore, check_tensor_fit
from .backends import FMBackend
from .digest import sha256_file
from .errors import InputError
from .manifest import Manifest

ALLOWED = {MANIFEST, PEFT_CONFIG, PEFT_WEIGHTS, STATE_WEIGHTS}
MAX_MEMBER_BYTES = 2 << 30


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name in ALLOWED - {MANIFEST}}


def export_version(store: AdapterStore, version: str, out_dir: str | None = None) -> Path:
    folder = store.path(version)
    if version == "base":
        raise InputError("the base FM is not an adapter and cannot be exported")
    out = Path(tempfile.mkdtemp(dir=out_dir)) / f"{store.root.name}-{version}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(folder.iterdir()):
            if p.name in ALLOWED:
                tar.add(p, arcname=f"{version}/{p.name}", recursive=False)
    return out


def import_archive(store: AdapterStore, backend: FMBackend, base_model: nn.Module, archive: str | Path,
                   note: str = "", by: str | None = None) -> str:
    """Check and commit an exported version; `by` (who imported it) goes into its `imported_from`."""
    staging = store.staging()
    try:
        _extract(Path(archive), staging)
        manifest = _check_manifest(staging, backend)
        _check_hashes(staging, manifest)
        _check_weights(staging, base_model)
        origin = {"id": manifest.id, "created": manifest.created, "note": manifest.note}
        if manifest.federation is not None:  # which federation, round and sites made it
            origin["federation"] = manifest.federation
        if by is not None:
            origin["by"] = by
        return store.commit(staging, manifest.with_fields(imported_from=origin, parent=None,
                                                          note=note or manifest.note))
    except BaseException:
        store.discard(staging)
        raise


def _extract(archive: Path, dest: Path) -> None:
    try:
        tar = tarfile.open(archive, "r:gz")  # noqa: SIM115 - closed by the with-block below
    except (tarfile.TarError, OSError, EOFError) as err:
        raise InputError("the upload is not a .tar.gz adapter archive") from err
    with tar:
        members = tar.getmembers()
        tops = set()
        for m in members:
            parts = Path(m.name).parts
            if m.name.startswith(("/", "\\")) or ".." in parts or not parts:
                raise InputError(f"archive member {m.name!r} would be written outside its folder; refused")
            if m.isdir() and len(parts) == 1:
                tops.add(parts[0])
                continue
            if not m.isfile():
                raise InputError(f"archive member {m.name!r} is a link or special file; only plain files are allowed")
            if len(parts) != 2 or parts[1] not in ALLOWED:
                raise InputError(f"archive member {m.name!r} is not one of an adapter's files {sorted(ALLOWED)}")
            if m.size > MAX_MEMBER_BYTES:
                raise InputError(f"archive member {m.name!r} is larger than {MAX_MEMBER_BYTES >> 30} GB")
            tops.add(parts[0])
        if len(tops) != 1:
            raise InputError("an adapter archive holds exactly one version folder")
        for m in members:
            if m.isfile():
                source = tar.extractfile(m)
                with source, open(dest / Path(m.name).name, "wb") as out:
                    out.write(source.read())


def _check_manifest(folder: Path, backend: FMBackend) -> Manifest:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise InputError("the archive has no readable manifest.json") from err
    try:
        manifest = Manifest.parse(data)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise InputError(f"the archive's manifest.json is not a version manifest: {str(err)[:300]}") from err
    if manifest.fm != backend.name:
        raise InputError(f"the adapter is for FM {manifest.fm!r}, this server runs {backend.name!r}")
    if manifest.fm_sha256 != backend.weights_sha256():
        raise InputError("the adapter was trained on other base weights (its fm_sha256 differs from this server's); "
                         "applying it would give wrong results")
    return manifest


def _check_hashes(folder: Path, manifest: Manifest) -> None:
    expected = manifest.files_sha256
    if not expected:
        raise InputError("the manifest records no file hashes, so the weights cannot be verified")
    actual = file_hashes(folder)
    if set(actual) != set(expected):
        raise InputError(f"the archive's files {sorted(actual)} differ from the manifest's {sorted(expected)}")
    for name, digest in expected.items():
        if actual[name] != digest:
            raise InputError(f"{name} does not match the SHA-256 in the manifest: the archive was altered or damaged")


def _check_weights(folder: Path, base_model: nn.Module) -> None:
    weights = folder / (PEFT_WEIGHTS if (folder / PEFT_WEIGHTS).exists() else STATE_WEIGHTS)
    if not weights.exists():
        raise InputError("the archive holds no weights file")
    head = weights.read_bytes()[:4]
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise InputError(f"{weights.name} is a pickle or torch.save file, not safetensors; refused, never unpickled")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as err:
        raise InputError(f"{weights.name} is not a valid safetensors file") from err
    if weights.name == STATE_WEIGHTS:  # a partial state dict: every tensor must be one of the FM's own
        expected = {k: tuple(v.shape) for k, v in base_model.state_dict().items()}
        check_tensor_fit(shapes, expected, partial=True)
    else:
        check_tensor_fit(shapes, _peft_shapes(folder, base_model), partial=False)


def _peft_shapes(folder: Path, base_model: nn.Module) -> dict[str, tuple]:
    """The tensor names and shapes peft itself would save for this adapter config on this FM."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    try:
        config = LoraConfig.from_pretrained(str(folder))
        model = get_peft_model(copy.deepcopy(base_model), config)
    except Exception as err:
        raise InputError(f"adapter_config.json does not describe a LoRA adapter this FM can take: {err}") from err
    return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model).items()}
