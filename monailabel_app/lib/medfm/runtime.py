"""The FM's heavy parts on an inference runtime built for CPUs (OpenVINO), with PyTorch as the fallback.

Why: on the 2-core dev CPU OpenVINO ran the LiteMedSAM encoder 2.4-3.2x faster than the product's PyTorch bf16
path in the same run, ONNX Runtime only about 1.1-1.5x (benchmarks/README.md, "CPU runtime"). Each adapter version
is exported from the served torch model itself (LoRA already merged by the store), so the runtime runs exactly the
weights PyTorch would. Exports are cached on disk per version and keyed by the version's content hashes; a cache
whose key does not match is rebuilt, never used. Anything that goes wrong (runtime not installed, export, a
corrupt file, compile, a call) logs why and leaves that part on PyTorch: a slower answer, never a failed request.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import typing
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .digest import sha256_file
from .errors import InputError

logger = logging.getLogger(__name__)

Runtime = Literal["torch", "openvino"]  # the server setting's type: its choices are written here only
RUNTIMES = typing.get_args(Runtime)
FORMAT = 2  # bump when what is exported changes: every cached export is then rebuilt (2: the encoder alone)
META = "meta.json"
_HINTS = {"bf16": "bf16", "fp32": "f32"}  # the product's resolved precision -> OpenVINO's inference precision
# `precision auto` on this runtime: OpenVINO's bf16 moved brain2's zero-shot Dice by 0.015 (bound 0.01), its f32
# by 0.000 on all five lesions while still running faster than PyTorch's bf16 (benchmarks/README.md, "CPU runtime")
AUTO_PRECISION = "fp32"


@dataclass(frozen=True)
class ExportPart:
    """A submodule the runtime may replace, described by the backend that owns it."""

    path: str  # dotted path in the served model, e.g. "sam.image_encoder"
    inputs: tuple[str, ...]  # its tensor arguments, in forward's order (callers may pass them by name)
    example: tuple[torch.Tensor, ...]  # traced once at export
    shapes: tuple[tuple[int, ...], ...]  # per input, -1 = any size
    fixed: dict = field(default_factory=dict)  # non-tensor keyword arguments baked into the export
    per_item: bool = False  # traced at batch 1 only (the code reads its batch size as a constant): run row by row

    @property
    def file(self) -> str:
        return self.path.replace(".", "_")


def resolve(requested: str, device: torch.device | str) -> str:
    """The runtime this process serves with: a GPU keeps PyTorch, and so does a machine without OpenVINO."""
    if requested not in RUNTIMES:
        raise InputError(f"runtime must be one of {', '.join(RUNTIMES)}, got {requested!r}")
    if requested == "torch":
        return requested
    if torch.device(device).type != "cpu":
        logger.info("runtime %s is for CPUs; device %s keeps PyTorch", requested, device)
        return "torch"
    try:
        import openvino  # noqa: F401
    except Exception as err:  # an ImportError, or a wheel that does not load on this CPU
        logger.warning("runtime openvino is not usable here (%s); serving with PyTorch", err)
        return "torch"
    return requested


class _Fixed(nn.Module):
    """What is traced: the part with its non-tensor arguments fixed, called with tensors only."""

    def __init__(self, module: nn.Module, part: ExportPart):
        super().__init__()
        self.module, self.names, self.fixed = module, part.inputs, part.fixed

    def forward(self, *tensors: torch.Tensor):
        return self.module(**dict(zip(self.names, tensors, strict=True)), **self.fixed)


class CompiledPart(nn.Module):
    """Drop-in for one torch submodule, running its compiled export; the torch module answers a call that fails."""

    def __init__(self, compiled, part: ExportPart, fallback: nn.Module):
        super().__init__()
        self.part, self.fallback = part, fallback
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from the server's threads take turns
        self.failures: dict[str, int] = {}  # error -> calls answered by PyTorch instead

    def forward(self, *args, **kwargs):
        try:
            return self._run(*args, **kwargs)
        except Exception as err:
            reason = f"{type(err).__name__}: {str(err)[:300]}"
            if reason not in self.failures:  # once per kind of failure, not once per slice
                logger.warning("runtime call of %s failed (%s); answered by PyTorch", self.part.path, reason)
            self.failures[reason] = self.failures.get(reason, 0) + 1
        return self.fallback(*args, **kwargs)

    def _run(self, *args, **kwargs):
        for name, value in self.part.fixed.items():
            if kwargs.pop(name, value) != value:
                raise ValueError(f"exported with {name}={value!r}, called with another value")
        bound = dict(zip(self.part.inputs, args, strict=False)) | kwargs
        tensors = [bound[name].detach().float().cpu().contiguous().numpy() for name in self.part.inputs]
        rows = range(len(tensors[0])) if self.part.per_item else [None]
        with self._lock:
            results = [self._infer(tensors if n is None else [t[n:n + 1] for t in tensors]) for n in rows]
        result = tuple(torch.cat(parts) for parts in zip(*results, strict=True))
        return result[0] if len(result) == 1 else result

    def _infer(self, tensors: list) -> tuple[torch.Tensor, ...]:
        outputs = self._request.infer(tensors)
        return tuple(torch.from_numpy(outputs[i].copy()) for i in range(len(outputs)))


def _replace(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """A shallow copy of `model` with the submodule at `path` replaced; `model` and its weights are untouched."""
    head, _, rest = path.partition(".")
    clone = copy.copy(model)
    clone._modules = dict(model._modules)
    clone._modules[head] = _replace(model._modules[head], rest, new) if rest else new
    return clone


def content_key(*hashes: str, parts: list[ExportPart]) -> str:
    """What an export must match to be used: the weights' hashes, what was exported, and by which tools."""
    import openvino

    spec = [(p.path, p.inputs, p.shapes, sorted(p.fixed.items()), p.per_item) for p in parts]
    text = json.dumps([FORMAT, openvino.__version__, torch.__version__, list(hashes), spec], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RuntimeCache:
    """Exports per version under `root`, compiled for this CPU with the product's precision as the hint."""

    def __init__(self, root: str | os.PathLike, precision: str):
        self.root = Path(root)
        self.hint = _HINTS.get(precision, "f32")
        self.status: dict[str, dict] = {}  # per version: runtime, reason, export_s, compile_s (read by benchmarks)

    def serve(self, model: nn.Module, name: str, parts: list[ExportPart], hashes: tuple[str, ...]) -> nn.Module:
        """`model` with `parts` on the runtime; `model` itself wherever the runtime cannot take over.

        `hashes` identify the weights `model` holds (the base FM's and the version's files): the cache key.
        """
        start = time.perf_counter()
        try:
            served, info = self._serve(model, name, parts, content_key(*hashes, parts=parts))
        except Exception as err:
            logger.warning("runtime openvino unavailable for %s (%s: %s); serving it with PyTorch",
                           name, type(err).__name__, err)
            served, info = model, {"runtime": "torch", "reason": f"{type(err).__name__}: {err}"}
        self.status[name] = info | {"total_s": round(time.perf_counter() - start, 3)}
        return served

    def _serve(self, model, name, parts, key):
        folder = self.root / name
        info: dict = {"runtime": "openvino", "hint": self.hint, "rebuilt": False}
        if not _intact(folder, key):
            info |= {"rebuilt": True, "export_s": self._export(model, folder, parts, key)}
        try:
            compiled, info["compile_s"] = self._compile(folder, parts)
        except Exception as err:  # a file the runtime cannot read though intact: rebuild once, then give up
            if info["rebuilt"]:
                raise
            logger.warning("runtime cache of %s unreadable (%s); rebuilding it", name, err)
            info |= {"rebuilt": True, "export_s": self._export(model, folder, parts, key)}
            compiled, info["compile_s"] = self._compile(folder, parts)
        served = model
        for part, c in zip(parts, compiled, strict=True):
            served = _replace(served, part.path, CompiledPart(c, part, model.get_submodule(part.path)))
        return served, info

    def _export(self, model: nn.Module, folder: Path, parts: list[ExportPart], key: str) -> float:
        """Trace each part and write it, fp32 weights uncompressed, into a staging folder renamed into place."""
        import openvino as ov

        start = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for part in parts:
                module = _Fixed(model.get_submodule(part.path), part).eval()
                with torch.no_grad():
                    converted = ov.convert_model(module, example_input=part.example, input=[list(s) for s in
                                                                                             part.shapes])
                ov.save_model(converted, str(staging / f"{part.file}.xml"), compress_to_fp16=False)
            files = {f.name: sha256_file(f) for f in sorted(staging.iterdir())}
            (staging / META).write_text(json.dumps({"key": key, "parts": [p.path for p in parts], "files": files}))
            trash = self.root / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
            if folder.exists():
                os.rename(folder, trash)  # the old export leaves by one rename, the new one arrives by another
            os.rename(staging, folder)
            shutil.rmtree(trash, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return round(time.perf_counter() - start, 3)

    def _compile(self, folder: Path, parts: list[ExportPart]):
        import openvino as ov

        start = time.perf_counter()
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": "LATENCY"}
        compiled = [core.compile_model(core.read_model(str(folder / f"{p.file}.xml")), "CPU", config) for p in parts]
        return compiled, round(time.perf_counter() - start, 3)


def _intact(folder: Path, key: str) -> bool:
    """The export was made for `key` and every file is the one written (a flipped byte would load silently)."""
    try:
        meta = json.loads((folder / META).read_text())
        return meta["key"] == key and bool(meta["files"]) and all(
            sha256_file(folder / name) == digest for name, digest in meta["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
