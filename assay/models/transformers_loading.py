"""Where a local transformers model comes from and how it is loaded: sources, devices, the
one-time GGUF conversion, artifact digests, and the per-process cache of loaded models."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from assay.core.digests import digest_json, memoized_file_digest, write_text_atomic
from assay.core.security import check_model_path
from assay.models.base import ServingConfig
from assay.models.bundled import bundled_gguf_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_HALF_DTYPES = ("bfloat16", "float16")
_DEVICE_TYPES = ("cpu", "cuda", "mps")
_SCHEMES = ("bundled", "gguf", "hf")
# Files of an HF directory that do not change what the model computes (merges.txt does, so
# .txt files in general are kept).
_IGNORED_SUFFIXES = (".md",)
_IGNORED_PREFIXES = ("LICENSE", "NOTICE", "USE_POLICY", ".")
_CONVERSION_MARKER = "assay-conversion.json"


@dataclass(frozen=True, slots=True)
class ResolvedSource:
    """Where a model source's files are: a GGUF file, or an HF directory."""

    kind: str  # "gguf" or "hf"
    path: Path


def resolve_source(source: str) -> ResolvedSource:
    """Check a ``bundled:``/``gguf:``/``hf:`` source URI and return the file or directory."""
    scheme, sep, rest = source.partition(":")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(
            f"model source {source!r} is not a transformers source "
            f"(expected one of {', '.join(s + ':' for s in _SCHEMES)})"
        )
    if scheme == "bundled":
        return ResolvedSource("gguf", bundled_gguf_path(rest))
    path = Path(rest).expanduser()
    check_model_path(str(path), source)  # before the path is looked at
    if scheme == "gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model source {source!r}: no GGUF file at {path}")
        return ResolvedSource("gguf", path.resolve())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model source {source!r}: {path} is not a Hugging Face model directory "
            "(no config.json)"
        )
    return ResolvedSource("hf", path.resolve())


def resolve_device(key: str, serving: ServingConfig) -> str:
    """The device a model version computes on ("cpu", "cuda", "cuda:1", "mps"), checked here.

    Raises ``ValueError`` naming the model version and its serving config when the device is
    unknown or absent on this machine, when ``device_map`` is combined with an explicit device
    or lacks the ``accelerate`` package, or when half precision would run on the CPU.
    """
    where = f"model {key!r}: serving config (device={serving.device!r}, dtype={serving.dtype!r})"
    if serving.device_map is not None:
        if serving.device != "auto":
            raise ValueError(
                f"{where} sets device_map={serving.device_map!r}; the map places the weights, "
                "so device must stay 'auto'"
            )
        if importlib.util.find_spec("accelerate") is None:
            raise ValueError(f"{where}: device_map needs the 'accelerate' package installed")
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif serving.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = _check_device(where, serving.device)
    if serving.dtype in _HALF_DTYPES and device == "cpu":
        raise ValueError(
            f"{where}: {serving.dtype} needs a GPU but this model would run on the CPU; "
            "serve it with dtype 'float32' on the CPU, or where CUDA is available"
        )
    return device


def _check_device(where: str, name: str) -> str:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in _DEVICE_TYPES:
        raise ValueError(
            f"{where}: {name!r} is not a device this backend runs on "
            "(expected 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps')"
        )
    if device.type == "cpu":
        return "cpu"
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{where}: device 'mps' is not available on this machine")
        return "mps"
    if not torch.cuda.is_available():
        raise ValueError(
            f"{where}: CUDA is not available on this machine (torch {torch.__version__}); "
            "use device 'auto' or 'cpu'"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"{where}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"so {name!r} does not exist"
        )
    return str(device)


def directory_digest(directory: Path, cache_dir: Path) -> str:
    """Digest of an HF model directory: every top-level file that affects outputs.

    That is weights, config, tokenizer files and the chat template (``chat_template.jinja`` or
    inside ``tokenizer_config.json``); READMEs and licences are left out.
    """
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and not p.name.startswith(_IGNORED_PREFIXES)
        and not p.name.endswith(_IGNORED_SUFFIXES)
        and p.name != _CONVERSION_MARKER
    )
    return digest_json(
        {"format": "hf", "files": {p.name: memoized_file_digest(p, cache_dir) for p in files}}
    )


def converted_model_dir(gguf_path: Path, cache_dir: Path) -> Path:
    """The HF directory a GGUF file is converted into, converting it on first use.

    The conversion is written to a temporary sibling directory and renamed into place, so a
    killed conversion never leaves a half-written model where loaders look.
    """
    digest = memoized_file_digest(gguf_path, cache_dir)
    models_dir = cache_dir / "models"
    target = models_dir / digest
    if (target / _CONVERSION_MARKER).is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(models_dir)
    partial = models_dir / f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _convert_gguf(gguf_path, partial)
        write_text_atomic(
            partial / _CONVERSION_MARKER,
            json.dumps({"gguf_file": gguf_path.name, "gguf_sha256": digest}),
        )
        try:
            partial.rename(target)
        except OSError:
            # Another process finished the same conversion first; its copy is as good.
            if not (target / _CONVERSION_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    transformers = import_transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
    )
    # A model loaded from GGUF refuses save_pretrained (it carries a quantization config), so
    # the dequantized weights move into a fresh model built from the config without it.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    out_dir.mkdir(parents=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _remove_abandoned_partials(models_dir: Path) -> None:
    """Delete temporary directories of conversions whose process no longer exists."""
    for partial in models_dir.glob(".partial-*"):
        pid_text = partial.name.split("-")[1]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def import_transformers() -> Any:
    # Evaluation never downloads: every source is a local file or directory.
    os.environ["HF_HUB_OFFLINE"] = "1"
    import transformers

    return transformers


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    cache_kwarg: str  # name of the forward() argument taking the KV cache
    max_positions: int
    eos_ids: frozenset[int]
    pad_id: int
    fallback_context_id: int  # conditions a continuation whose context has no tokens
    adds_bos: bool  # the tokenizer puts BOS in front of raw text by default
    device: torch.device  # where input tensors go (the input embeddings' device)


# Loaded models per (directory, dtype, device, device_map): several clients and steps in one
# process load once.
_LOADED: dict[tuple[str, str, str, str | None], LoadedModel] = {}
_LOAD_LOCK = threading.Lock()


def load_model(
    directory: Path, dtype: str, device: str = "cpu", device_map: str | None = None
) -> LoadedModel:
    key = (str(directory), dtype, device, device_map)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(directory, DTYPES[dtype], device, device_map)
        return _LOADED[key]


def _load_uncached(
    directory: Path, dtype: torch.dtype, device: str, device_map: str | None
) -> LoadedModel:
    transformers = import_transformers()
    placement = {"device_map": device_map} if device_map is not None else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=dtype, local_files_only=True, **placement
    ).eval()
    if device_map is None:
        model = model.to(device)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    eos: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            eos.add(source)
        elif source:
            eos.update(int(i) for i in source)
    if not eos:
        raise ValueError(f"model at {directory} defines no end-of-sequence token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a").input_ids[:1] == [bos]
    params = inspect.signature(model.forward).parameters
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        cache_kwarg="cache" if "cache" in params else "past_key_values",
        max_positions=int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30),
        eos_ids=frozenset(eos),
        pad_id=int(pad_id),
        fallback_context_id=int(bos if bos is not None else min(eos)),
        adds_bos=adds_bos,
        device=model.get_input_embeddings().weight.device,
    )
