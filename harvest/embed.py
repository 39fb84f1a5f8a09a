"""CLIP image embeddings (open-clip-torch) for diversity pruning.

What this module owns: finding the weights, building the image tower, turning a reflectance RGB
array into the model's input, and running the tower on the fastest path the machine offers. It
knows nothing about datasets, files of chips or tables: the embed stage reads the images and
hands numpy arrays in.

Where weights come from (:class:`WeightsSpec`, :func:`resolve_weights`):
    * an open_clip architecture name (``ViT-B-32``) with a pretrained tag
      (``laion2b_s34b_b79k``): the file open_clip would load for that tag, looked up in the local
      Hugging Face cache (``open_clip_model.safetensors`` first, then
      ``open_clip_pytorch_model.bin``, as open_clip tries them);
    * ``hf-hub:ORG/REPO``: the repository's ``open_clip_config.json`` and weights, from the same
      cache;
    * a path to an open_clip model-config JSON file (a custom architecture) with a checkpoint;
    * any of these with ``checkpoint=PATH``: a local state dict for the architecture (RemoteCLIP
      and GeoRSCLIP ship full CLIP state dicts, maybe wrapped in ``{"state_dict": ...}`` and
      ``module.``-prefixed); the tag is then ignored.

Offline rules: nothing is downloaded unless ``WeightsSpec.allow_download`` is true and
huggingface_hub is not in offline mode (``HF_HUB_OFFLINE``, read by huggingface_hub itself). A
missing file is reported at once, in one line that names the repository and file and says how
to provide them (:class:`WeightsError`), instead of after minutes of retries.

The probe (:func:`probe_paths`): reduced precision pays only on some CPUs. bf16 matmuls are
~4x faster than fp32 on a CPU with AVX-512 BF16 / AMX, but bf16 is ~6x slower than fp32 on an
AVX2-only CPU; int8 dynamic quantisation of the Linear layers sits in between; ONNX Runtime and
OpenVINO are tried when they are installed (optional, not dependencies). So
:meth:`ClipEmbedder.load` with ``precision="auto"`` times every candidate path on a small
sample, compares each path's embeddings with fp32 (minimum cosine >= :data:`MIN_COSINE`), and
keeps the fastest path that agrees; fp32 otherwise. :meth:`ProbeReport.line` says what was
chosen and why, including a faster path rejected by the cosine check.

The ``bf16`` path runs only the Linear, convolution and attention units in bf16 and keeps the
residual stream, LayerNorms and output in fp32: ~6 % slower than casting the whole tower
(``bf16-full``, available by name) and ~3x closer to fp32. That matters more than the cosine
threshold suggests: k-means selections flip on small moves of the embeddings (see
docs/benchmarks.md, "harvest embed").

torch and open_clip are imported inside the functions that need them; importing this module
costs only numpy.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from harvest.errors import EmbedError, HarvestError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

MIN_COSINE = 0.995
"""A reduced-precision path is used only if its embeddings agree this well with fp32's."""

PROBE_IMAGES = 32
"""Images in the default probe sample (seeded random); two chunks of :data:`PROBE_CHUNK`."""

PROBE_CHUNK = 16
"""Images per probe call. oneDNN builds its kernels per input shape, so every path runs one
untimed chunk first; then the chunks of the sample are timed."""

PROBE_SEED = 0
"""Seed of the default probe sample."""

STRETCH_PERCENTILES = (2.0, 98.0)
"""Per-band display stretch: these percentiles of the valid pixels map to 0 and 1."""

PERCENTILE_SAMPLE = 16384
"""About how many pixels of a band the stretch percentiles are estimated from (a strided grid)."""

FLAT_BAND_VALUE = 0.5
"""Stretched value of a band whose 2nd and 98th percentiles are equal (no contrast to stretch):
mid-grey, so that a flat band neither dominates nor vanishes."""

HF_CONFIG_NAME = "open_clip_config.json"
HF_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""What open_clip looks for in a Hugging Face repository, in its order of preference."""

CPU_PATHS = ("fp32", "bf16", "int8", "onnxruntime", "openvino")
"""The CPU paths the probe tries by default (``"bf16-full"`` only when asked by name)."""
CPU_NAMED_PATHS = (*CPU_PATHS, "bf16-full")
CUDA_PATHS = ("cuda-fp32", "cuda-fp16", "cuda-bf16")

_LIST_MODELS_HINT = 'python -c "import open_clip; print(open_clip.list_models())"'


class WeightsError(HarvestError, FileNotFoundError):
    """Weights (or the model config) are missing, unknown or do not fit the architecture."""


class EmbedDeviceError(HarvestError, RuntimeError):
    """The requested device is not available (``--device cuda`` without a CUDA device)."""


# --- weights --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsSpec:
    """Which CLIP weights to load.

    Attributes:
        model: An open_clip architecture name (``"ViT-B-32"``), a path to an open_clip
            model-config JSON file (a custom architecture; it needs ``checkpoint``), or
            ``"hf-hub:ORG/REPO"`` (config and weights from that Hugging Face repository).
        pretrained: An open_clip pretrained tag for ``model`` (found in the local Hugging Face
            cache). Ignored when ``checkpoint`` is given or ``model`` is ``hf-hub:``.
        checkpoint: A local state dict for ``model`` (full CLIP, or the image tower alone).
        allow_download: Download missing files from the Hugging Face Hub. Even when true, nothing
            is downloaded while huggingface_hub is in offline mode (``HF_HUB_OFFLINE``).
    """

    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    checkpoint: Path | None = None
    allow_download: bool = False


@dataclass(frozen=True)
class ResolvedWeights:
    """The weights file a :class:`WeightsSpec` points at, found on disk.

    Attributes:
        path: The weights file that will be loaded.
        sha256: Its SHA-256 (hex), recorded next to every embedding.
        label: Model name for the output table, e.g. ``"ViT-B-32/laion2b_s34b_b79k"`` or
            ``"ViT-B-32@remoteclip.pt"``.
    """

    path: Path
    sha256: str
    label: str


@dataclass(frozen=True)
class _Arch:
    """What :func:`_resolve` learns besides the weights file (internal)."""

    name: str
    model_cfg: Mapping[str, Any]
    preprocess_cfg: Mapping[str, Any]
    quick_gelu: bool


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, streamed; cached in-process per (path, size, mtime).

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    real = Path(path).resolve()
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
    h = hashlib.sha256()
    with real.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    with _SHA_LOCK:
        _SHA_CACHE[key] = digest
    return digest


def _hf_cache_dir(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _may_download(spec: WeightsSpec) -> bool:
    if not spec.allow_download:
        return False
    from huggingface_hub import constants

    return not constants.is_offline_mode()


def _find_hf_file(
    repo: str, names: Sequence[str], spec: WeightsSpec, cache_dir: Path | None
) -> Path | None:
    """The first of ``names`` in the local cache of ``repo`` (downloaded first if allowed)."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
        if isinstance(hit, str):
            return Path(hit)
    if _may_download(spec):
        from huggingface_hub import hf_hub_download

        for name in names:
            try:
                return Path(hf_hub_download(repo, name, cache_dir=cache_dir))
            except Exception as exc:  # noqa: BLE001 - the next name may exist; report after all
                log.info("no %s in %s: %s", name, repo, exc)
    return None


def _missing_hf(what: str, repo: str, name: str, cache_dir: Path | None) -> WeightsError:
    return WeightsError(
        f"weights {what} are not in the Hugging Face cache ({_hf_cache_dir(cache_dir)}): "
        f"missing {repo}:{name}; download it on a machine with internet "
        f"(`hf download {repo} {name}`) and copy the cache here (HF_HOME), "
        "or pass --checkpoint PATH"
    )


def _load_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {what} {path}: {exc}; pass a valid JSON file") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{what} {path} is not a JSON object; pass an open_clip model config")
    return data


def _split_config(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg) from a bare model config or an hf-hub style config."""
    model_cfg = dict(data.get("model_cfg", data))
    if not all(k in model_cfg for k in ("embed_dim", "vision_cfg")):
        raise WeightsError(
            f"{source} is not an open_clip model config (it needs embed_dim and vision_cfg); "
            "see open_clip/model_configs/*.json for the format"
        )
    return model_cfg, dict(data.get("preprocess_cfg", {}))


class _OpenClipTables:
    """open_clip's architecture configs and pretrained-tag tables, without importing torch.

    ``import open_clip`` imports torch (2-3 s); finding which weight file a tag names needs
    only two data tables. When open_clip is not imported yet, its ``pretrained`` module (plain
    dicts; its optional safetensors import, which pulls torch, is held back) is loaded under a
    private package name and the model configs are read from their JSON files, so a missing
    weight file is reported within a second. Once open_clip is imported (or if anything here
    fails), open_clip itself answers, with any config a user added to it.
    """

    _PKG = "harvest._open_clip_tables"

    def __init__(self) -> None:
        import importlib
        import importlib.util
        import sys
        import types

        self.full: Any = sys.modules.get("open_clip")
        self.pretrained: Any = None
        self.configs: dict[str, dict[str, Any]] = {}
        if self.full is not None:
            return
        try:
            spec = importlib.util.find_spec("open_clip")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("open_clip")
            folder = Path(list(spec.submodule_search_locations)[0])
            if self._PKG + ".pretrained" not in sys.modules:
                pkg = types.ModuleType(self._PKG)
                pkg.__path__ = [str(folder)]
                sys.modules[self._PKG] = pkg
                held = "safetensors.torch" not in sys.modules
                if held:
                    sys.modules["safetensors.torch"] = None  # type: ignore[assignment]
                try:
                    importlib.import_module(self._PKG + ".pretrained")
                finally:
                    if held:
                        del sys.modules["safetensors.torch"]
            self.pretrained = sys.modules[self._PKG + ".pretrained"]
            for path in sorted((folder / "model_configs").glob("*.json")):
                cfg = json.loads(path.read_text())
                if all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
                    self.configs[path.stem] = cfg
        except Exception:  # noqa: BLE001 - any surprise: let open_clip answer itself
            import open_clip

            self.full = open_clip

    def get_model_config(self, name: str) -> dict[str, Any] | None:
        if self.full is not None:
            cfg = self.full.get_model_config(name)
            return None if cfg is None else dict(cfg)
        cfg = self.configs.get(name)
        return copy.deepcopy(cfg) if cfg is not None else None

    def list_models(self) -> list[str]:
        if self.full is not None:
            return list(self.full.list_models())
        return list(self.configs)

    def get_pretrained_cfg(self, name: str, tag: str) -> dict[str, Any]:
        source = self.full if self.full is not None else self.pretrained
        return dict(source.get_pretrained_cfg(name, tag) or {})

    def list_pretrained_tags_by_model(self, name: str) -> list[str]:
        source = self.full if self.full is not None else self.pretrained
        return list(source.list_pretrained_tags_by_model(name))


def _builtin_arch(model: str) -> tuple[str, dict[str, Any]]:
    open_clip = _OpenClipTables()

    name = model.replace("/", "-")  # open_clip accepts "ViT-B/32" for "ViT-B-32"
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise WeightsError(
            f"unknown model {model!r}{hint}: pass an open_clip architecture name, a model-config "
            f"JSON file or hf-hub:ORG/REPO; list the names with `{_LIST_MODELS_HINT}`"
        )
    return name, dict(cfg)


def _checkpoint_path(spec: WeightsSpec) -> Path:
    assert spec.checkpoint is not None
    path = Path(spec.checkpoint).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"checkpoint {path} does not exist; pass the path of a local state dict file "
            "(--checkpoint PATH)"
        )
    return path


def _resolve(spec: WeightsSpec, cache_dir: Path | None) -> tuple[ResolvedWeights, _Arch]:
    """Find the weights and the architecture a spec names (no network unless allowed)."""
    model = spec.model
    preprocess_cfg: dict[str, Any] = {}
    quick_gelu = False
    weights: Path | None = None
    label: str
    if spec.checkpoint is not None:
        _checkpoint_path(spec)  # a missing file is said before open_clip (and torch) import

    if model.startswith("hf-hub:"):
        repo = model[len("hf-hub:") :].strip("/")
        if repo.count("/") != 1:
            raise WeightsError(f"bad model {model!r}: write hf-hub:ORG/REPO")
        cfg_file = _find_hf_file(repo, [HF_CONFIG_NAME], spec, cache_dir)
        if cfg_file is None:
            raise _missing_hf(model, repo, HF_CONFIG_NAME, cache_dir)
        name = model
        model_cfg, preprocess_cfg = _split_config(_load_json(cfg_file, "model config"), model)
        if spec.checkpoint is None:
            weights = _find_hf_file(repo, HF_WEIGHT_NAMES, spec, cache_dir)
            if weights is None:
                raise _missing_hf(model, repo, HF_WEIGHT_NAMES[0], cache_dir)
        label = model
    elif model.endswith(".json") or Path(model).is_file():
        cfg_path = Path(model).expanduser()
        if not cfg_path.is_file():
            raise WeightsError(
                f"model config {cfg_path} does not exist; pass an open_clip architecture name "
                "or the path of an open_clip model-config JSON file"
            )
        name = cfg_path.stem
        model_cfg, preprocess_cfg = _split_config(
            _load_json(cfg_path, "model config"), str(cfg_path)
        )
        if spec.checkpoint is None:
            raise WeightsError(
                f"model config {cfg_path} comes without weights (no pretrained tag applies to "
                "a custom architecture); pass --checkpoint PATH"
            )
        label = name
    else:
        open_clip = _OpenClipTables()

        name, model_cfg = _builtin_arch(model)
        label = name
        if spec.checkpoint is None:
            tag = spec.pretrained
            if not tag:
                raise WeightsError(
                    f"no weights for {name}: pass --pretrained TAG or --checkpoint PATH"
                )
            tag_cfg = open_clip.get_pretrained_cfg(name, tag)
            if not tag_cfg:
                tags = open_clip.list_pretrained_tags_by_model(name)
                known = ", ".join(tags) if tags else "none"
                hint = " (a file? pass it as --checkpoint PATH)" if Path(tag).is_file() else ""
                raise WeightsError(
                    f"unknown pretrained tag {tag!r} for {name}{hint}; its tags: {known} "
                    "(open_clip.list_pretrained_tags_by_model)"
                )
            preprocess_cfg = {
                k: tag_cfg[k]
                for k in ("mean", "std", "interpolation", "resize_mode")
                if k in tag_cfg
            }
            quick_gelu = bool(tag_cfg.get("quick_gelu", False))
            label = f"{name}/{tag}"
            hub = str(tag_cfg.get("hf_hub", ""))
            if not hub:
                raise WeightsError(
                    f"weights {label} are not published on the Hugging Face Hub; download them "
                    "yourself and pass --checkpoint PATH"
                )
            repo, filename = hub.rstrip("/"), ""
            if not hub.endswith("/"):
                repo, filename = hub.rsplit("/", 1)
            names: list[str] = list(HF_WEIGHT_NAMES)
            if filename:
                names = [filename]
                if filename.endswith((".bin", ".pth")):
                    # open_clip tries a .safetensors twin of a named .bin/.pth file first.
                    names.insert(0, filename[:-4] + ".safetensors")
            weights = _find_hf_file(repo, names, spec, cache_dir)
            if weights is None:
                raise _missing_hf(label, repo, names[0], cache_dir)

    if spec.checkpoint is not None:
        weights = _checkpoint_path(spec)
        label = f"{label}@{weights.name}"
    assert weights is not None
    resolved = ResolvedWeights(path=weights, sha256=file_sha256(weights), label=label)
    arch = _Arch(
        name=name,
        model_cfg=model_cfg,
        preprocess_cfg=preprocess_cfg,
        quick_gelu=bool(model_cfg.get("quick_gelu", False)) or quick_gelu,
    )
    return resolved, arch


def resolve_weights(spec: WeightsSpec, *, cache_dir: Path | None = None) -> ResolvedWeights:
    """Find the weights file a spec names, without loading it.

    Fast and offline (unless ``spec.allow_download``): the local Hugging Face cache is searched
    for the file open_clip would load, a checkpoint path is checked, and the file is hashed.

    Args:
        spec: Which weights.
        cache_dir: The Hugging Face hub cache (the folder holding ``models--ORG--REPO``);
            huggingface_hub's default (``$HF_HOME/hub``) when None.

    Returns:
        The file, its SHA-256 and the label to record.

    Raises:
        WeightsError: The architecture or tag is unknown, or a file is missing (the one-line
            message names it and how to provide it).
    """
    return _resolve(spec, cache_dir)[0]


# --- state dicts and the image tower ---------------------------------------------------------


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            # weights_only: a checkpoint is data; never run code from a pickle.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
        detail = _first_line(exc)
        raise WeightsError(
            f"cannot read checkpoint {path}: {detail}; pass a state dict saved with torch.save "
            "or a .safetensors file"
        ) from None
    # Training scripts wrap the weights: {"state_dict": ...} or {"model": ...}.
    while isinstance(obj, dict):
        inner = next(
            (obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), dict)), None
        )
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise WeightsError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state dict; pass a state "
            "dict saved with torch.save(model.state_dict())"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    # DataParallel / DistributedDataParallel prefix every key with "module.".
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _describe_keys(keys: Sequence[str]) -> str:
    prefixes: dict[str, int] = {}
    for k in keys:
        head = k.split(".", 1)[0] + ("." if "." in k else "")
        prefixes[head] = prefixes.get(head, 0) + 1
    top = sorted(prefixes.items(), key=lambda kv: -kv[1])[:4]
    return ", ".join(f"{p} x{n}" for p, n in top) or "nothing"


def _build_visual(arch: _Arch, weights: ResolvedWeights) -> torch.nn.Module:
    """The image tower of ``arch`` with the weights of ``weights`` loaded, fp32, eval mode."""
    from open_clip.model import _build_vision_tower  # the tower alone: no text weights to build

    vision_cfg = dict(arch.model_cfg["vision_cfg"])
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False  # never fetch timm's own weights
    try:
        visual = _build_vision_tower(
            int(arch.model_cfg["embed_dim"]), vision_cfg, quick_gelu=arch.quick_gelu
        )
    except Exception as exc:  # noqa: BLE001 - a malformed config, whatever open_clip raises
        raise WeightsError(
            f"cannot build the image tower of {arch.name}: {exc}; check its model config"
        ) from None

    state = _read_state_dict(weights.path)
    expected = visual.state_dict()
    sub = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    if not sub and set(expected) <= set(state):
        sub = state  # a state dict of the image tower alone
    missing = [k for k in expected if k not in sub]
    if missing:
        raise WeightsError(
            f"checkpoint {weights.path} lacks {len(missing)} of the {len(expected)} image-tower "
            f"weights of {arch.name} (e.g. visual.{missing[0]}); it holds {len(state)} tensors "
            f"({_describe_keys(list(state))}); pass a full CLIP checkpoint for this --model"
        )
    for k, ref in expected.items():
        if tuple(sub[k].shape) != tuple(ref.shape):
            raise WeightsError(
                f"checkpoint {weights.path} does not fit {arch.name}: visual.{k} has shape "
                f"{tuple(sub[k].shape)}, the model expects {tuple(ref.shape)}; pass the "
                "matching --model"
            )
    # load_state_dict copies into the fp32 parameters: fp16 checkpoints come out fp32.
    visual.load_state_dict({k: sub[k] for k in expected}, strict=True)
    visual.float().eval()
    visual.requires_grad_(False)
    return visual


# --- paths: ways to run the image tower ------------------------------------------------------

Runner = Callable[[FloatArray], FloatArray]
"""Runs the tower: a float32 (B, 3, S, S) batch in, float32 (B, dim) embeddings (not yet
normalised) out."""


@dataclass(frozen=True)
class EmbedPath:
    """A candidate way to run the image tower (a precision or a runtime).

    Attributes:
        name: Shown in the probe report (``"bf16"``, ``"int8"``, ...).
        build: Makes a :data:`Runner` from the fp32 tower and the device; must not modify the
            tower (copy it). Raising means "not available here" (the probe notes why).
    """

    name: str
    build: Callable[[torch.nn.Module, str], Runner]


def _torch_runner(module: torch.nn.Module, device: str, dtype: torch.dtype) -> Runner:
    import torch

    def run(batch: FloatArray) -> FloatArray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            x = x.to(device=device, dtype=dtype, non_blocking=True)
            out = module(x)
            if isinstance(out, tuple):  # towers built with output_tokens return (pooled, tokens)
                out = out[0]
            return out.float().cpu().numpy()

    return run


def _build_fp32(visual: torch.nn.Module, device: str) -> Runner:
    import torch

    return _torch_runner(visual.to(device), device, torch.float32)


def _build_bf16_full(visual: torch.nn.Module, device: str) -> Runner:
    import torch

    # Everything in bf16, the residual stream included: the fastest, and the least exact.
    return _torch_runner(copy.deepcopy(visual).to(device, torch.bfloat16), device, torch.bfloat16)


def _is_mixed_unit(module: torch.nn.Module) -> bool:
    """Modules that run in bf16 as a whole, their inputs cast in and their outputs cast out."""
    import torch
    from torch import nn

    if isinstance(module, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)):
        return True
    # A transformer MLP (Linear, activation, Linear): one unit, so that its wide hidden layer
    # is not cast to fp32 and back between the two matmuls.
    kinds = (nn.Linear, nn.GELU, nn.Dropout, nn.Identity)
    children = list(module.children())
    return (
        isinstance(module, nn.Sequential)
        and any(isinstance(c, nn.Linear) for c in children)
        and all(isinstance(c, kinds) or type(c).__name__ == "QuickGELU" for c in children)
        and not isinstance(module, torch.jit.ScriptModule)
    )


def _cast_floats(value: Any, dtype: torch.dtype, memo: dict[int, Any] | None = None) -> Any:
    """Cast the floating tensors in ``value`` (a tensor or a tuple of them) to ``dtype``.

    A tensor passed twice comes out as one tensor: attention is called with the same tensor as
    query, key and value, and takes its fast fused kernel only if they stay the same object.
    """
    import torch

    memo = {} if memo is None else memo
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        if id(value) not in memo:
            memo[id(value)] = value.to(dtype)
        return memo[id(value)]
    if isinstance(value, tuple):
        return tuple(_cast_floats(v, dtype, memo) for v in value)
    return value


def _build_bf16(visual: torch.nn.Module, device: str) -> Runner:
    """bf16 matmuls and convolutions, everything between them in fp32.

    Casting the whole tower to bf16 (:func:`_build_bf16_full`) also rounds the residual stream,
    the LayerNorms and the embeddings to bf16 at every layer; here only the Linear/Conv/attention
    units run in bf16 (AMX), with their inputs cast in and outputs cast back to fp32 by hooks.
    Measured on ViT-B-32: the distance to fp32 embeddings is ~3x smaller (min cosine 0.99999
    against 0.99994) for ~8 % less speed, which matters because k-means selections flip on
    tiny moves. autocast does the same casts per op but re-casts the fp32 weights at every call
    and runs only ~1.2x fp32.
    """
    import torch

    bf16 = torch.bfloat16
    model = copy.deepcopy(visual).to(device)

    def cast_in(
        module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        memo: dict[int, Any] = {}
        return (
            _cast_floats(args, bf16, memo),
            {k: _cast_floats(v, bf16, memo) for k, v in kwargs.items()},
        )

    def cast_out(module: torch.nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        return _cast_floats(out, torch.float32)

    def convert(parent: torch.nn.Module) -> None:
        for child in parent.children():
            if _is_mixed_unit(child):
                child.to(bf16)
                child.register_forward_pre_hook(cast_in, with_kwargs=True)
                child.register_forward_hook(cast_out)
            else:
                convert(child)

    convert(model)
    return _torch_runner(model, device, torch.float32)


def _build_int8(visual: torch.nn.Module, device: str) -> Runner:
    import torch

    if not device.startswith("cpu"):
        raise EmbedError("int8 dynamic quantisation runs on the CPU only")
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, but still works and needs
        # no extra package; the probe checks it against fp32 anyway.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        q = quantize_dynamic(copy.deepcopy(visual), {torch.nn.Linear}, dtype=torch.qint8)
    return _torch_runner(q, device, torch.float32)


def _build_onnxruntime(visual: torch.nn.Module, device: str) -> Runner:
    import tempfile

    import onnxruntime as ort  # optional: the path is skipped when it is not installed
    import torch

    if not device.startswith("cpu"):
        raise EmbedError("the onnxruntime path runs on the CPU only")
    size = _tower_image_size(visual)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "visual.onnx"
        fastpath = torch.backends.mha.get_fastpath_enabled()
        # The fused attention kernel of eval-mode MultiheadAttention has no ONNX export.
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    visual,
                    (torch.zeros(1, 3, size, size),),
                    str(onnx_file),
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                    dynamo=False,
                )
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])

    def run(batch: FloatArray) -> FloatArray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(session.run(["y"], {"x": x})[0], dtype=np.float32)

    return run


def _build_openvino(visual: torch.nn.Module, device: str) -> Runner:
    import openvino as ov  # optional: the path is skipped when it is not installed
    import torch

    if not device.startswith("cpu"):
        raise EmbedError("the openvino path runs on the CPU only")
    size = _tower_image_size(visual)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(
            copy.deepcopy(visual), example_input=torch.zeros(1, 3, size, size)
        )
    core = ov.Core()
    # OpenVINO picks bf16 itself on CPUs that have it; throughput hint for batches.
    compiled = core.compile_model(
        ov_model,
        "CPU",
        {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": torch.get_num_threads()},
    )

    def run(batch: FloatArray) -> FloatArray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(compiled(x)[0], dtype=np.float32)

    return run


def _build_cuda(dtype_name: str) -> Callable[[torch.nn.Module, str], Runner]:
    def build(visual: torch.nn.Module, device: str) -> Runner:
        import torch

        if not device.startswith("cuda"):
            raise EmbedError(f"cuda-{dtype_name} needs --device cuda")
        dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        dtype = dtypes[dtype_name]
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise EmbedError("this GPU has no bf16")
        module = visual.to(device) if dtype is torch.float32 else copy.deepcopy(visual)
        return _torch_runner(module.to(device, dtype), device, dtype)

    return build


BUILTIN_PATHS: Mapping[str, EmbedPath] = {
    "fp32": EmbedPath("fp32", _build_fp32),
    "bf16": EmbedPath("bf16", _build_bf16),
    "bf16-full": EmbedPath("bf16-full", _build_bf16_full),
    "int8": EmbedPath("int8", _build_int8),
    "onnxruntime": EmbedPath("onnxruntime", _build_onnxruntime),
    "openvino": EmbedPath("openvino", _build_openvino),
    "cuda-fp32": EmbedPath("cuda-fp32", _build_cuda("fp32")),
    "cuda-fp16": EmbedPath("cuda-fp16", _build_cuda("fp16")),
    "cuda-bf16": EmbedPath("cuda-bf16", _build_cuda("bf16")),
}
"""The paths :meth:`ClipEmbedder.load` knows by name."""


def _tower_image_size(visual: torch.nn.Module) -> int:
    size = getattr(visual, "image_size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise EmbedError(f"non-square model input {tuple(size)} is not supported")
        size = size[0]
    return int(size)


# --- the probe -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathTiming:
    """How one path did in the probe.

    Attributes:
        name: The path (``"fp32"``, ``"bf16"``, ``"int8"``, ``"onnxruntime"``, ...).
        images_per_s: Throughput on the probe sample (0 when it did not run).
        min_cosine: Lowest cosine similarity to fp32 over the sample (1.0 for fp32; nan when
            it did not run).
        ok: It ran and ``min_cosine >= MIN_COSINE``.
        note: Why it is not ok, or that it was stopped early.
    """

    name: str
    images_per_s: float
    min_cosine: float
    ok: bool
    note: str = ""


@dataclass(frozen=True)
class ProbeReport:
    """What the start-up probe measured and which path it chose.

    Attributes:
        chosen: Name of the path used for embedding.
        timings: One entry per candidate, the fp32 reference first.
    """

    chosen: str
    timings: tuple[PathTiming, ...]

    def line(self) -> str:
        """One line for the log: the chosen path, the others, and any faster path rejected.

        Returns:
            e.g. ``"embedding path: bf16 (148 img/s; fp32 31 img/s; int8 51 img/s)"``.
        """
        by_name = {t.name: t for t in self.timings}
        chosen = by_name.get(self.chosen)
        head = f"embedding path: {self.chosen}"
        if chosen is None:
            return head
        parts = [f"{chosen.images_per_s:.0f} img/s"]
        for t in self.timings:
            if t.name == self.chosen:
                continue
            if t.images_per_s <= 0:
                parts.append(f"{t.name} unavailable ({t.note})" if t.note else f"{t.name} failed")
                continue
            text = f"{t.name} {t.images_per_s:.0f} img/s"
            if not t.ok:
                text += f" rejected: {t.note}" if t.note else " rejected"
            elif t.note:
                text += f" ({t.note})"
            parts.append(text)
        return f"{head} ({'; '.join(parts)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def _cosines(a: FloatArray, b: FloatArray) -> FloatArray:
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    num = np.sum(a64 * b64, axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = (num / den).astype(np.float32)
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _time_runner(
    runner: Runner, sample: FloatArray, chunk: int, device: str, floor_ips: float
) -> tuple[float, FloatArray, bool]:
    """(images/s, outputs for the images run, stopped early) of one path on the sample.

    The first chunk runs untimed (kernel set-up for that shape) but its outputs count for the
    cosine check. The rate is that of the fastest timed chunk: on a shared machine another
    process can slow any one chunk, never speed one up. A path slower than ``floor_ips`` after
    a timed chunk is stopped: it cannot win, and on a CPU without native bf16 a full sample
    would cost tens of seconds.
    """
    first = runner(sample[:chunk])
    _sync(device)
    outputs = [first]
    best = 0.0
    stopped = False
    for start in range(0, len(sample), chunk):
        part = sample[start : start + chunk]
        t0 = time.perf_counter()
        out = runner(part)
        _sync(device)
        best = max(best, len(part) / max(time.perf_counter() - t0, 1e-9))
        if start > 0:
            outputs.append(out)
        if start + chunk < len(sample) and best < floor_ips:
            stopped = True
            break
    return best, np.concatenate(outputs), stopped


def probe_paths(
    visual: torch.nn.Module,
    sample: FloatArray,
    candidates: Sequence[EmbedPath],
    *,
    reference: EmbedPath,
    device: str = "cpu",
    chunk: int = PROBE_CHUNK,
    min_cosine: float = MIN_COSINE,
) -> tuple[ProbeReport, Runner]:
    """Time every candidate path on a sample, check it against the reference, pick one.

    Args:
        visual: The fp32 image tower.
        sample: A preprocessed float32 batch (B, 3, S, S).
        candidates: Paths to try besides the reference (a failing build is noted, not raised).
        reference: The fp32 path every candidate is compared with; used when none is faster.
        device: Torch device string.
        chunk: Images per call.
        min_cosine: The agreement a candidate needs.

    Returns:
        The report, and the runner of the chosen path.
    """
    ref_runner = reference.build(visual, device)
    ref_ips, ref_out, _ = _time_runner(ref_runner, sample, chunk, device, 0.0)
    timings = [PathTiming(reference.name, ref_ips, 1.0, True)]
    best_name, best_ips, best_runner = reference.name, ref_ips, ref_runner
    for cand in candidates:
        if cand.name == reference.name:
            continue
        try:
            runner = cand.build(visual, device)
        except Exception as exc:  # noqa: BLE001 - "not available here", whatever the reason
            text = _first_line(exc)
            timings.append(PathTiming(cand.name, 0.0, float("nan"), False, text))
            log.info("embedding path %s unavailable: %s", cand.name, text)
            continue
        try:
            ips, out, stopped = _time_runner(runner, sample, chunk, device, ref_ips / 2)
        except Exception as exc:  # noqa: BLE001 - a path that fails to run is not a candidate
            text = _first_line(exc)
            timings.append(PathTiming(cand.name, 0.0, float("nan"), False, text))
            continue
        cos = _cosines(out, ref_out[: len(out)])
        worst = float(np.min(cos)) if np.all(np.isfinite(cos)) else float("nan")
        ok = bool(worst >= min_cosine)
        if not ok:
            note = f"min cosine {worst:.4f} < {min_cosine} vs {reference.name}"
        elif stopped:
            note = f"stopped after {len(out)} images: slower than {reference.name}"
        else:
            note = ""
        timings.append(PathTiming(cand.name, ips, worst, ok, note))
        if ok and ips > best_ips:
            best_name, best_ips, best_runner = cand.name, ips, runner
    return ProbeReport(best_name, tuple(timings)), best_runner


# --- preprocessing ---------------------------------------------------------------------------


def stretch_limits(band: npt.NDArray[np.floating]) -> tuple[float, float] | None:
    """The 2nd and 98th percentiles of a band's valid pixels (None when it has none).

    Estimated on a regular grid of about :data:`PERCENTILE_SAMPLE` pixels (every k-th row and
    column): for 484 px chips this moved the limits by 0.3 % of the stretched range (median;
    1.2 % at most over 192 bands), about one display level, at a fifth of the cost of the full
    percentile (0.2 against 1 ms a band), the largest part of preprocessing.

    Args:
        band: (H, W) reflectance, NaN = nodata.

    Returns:
        (low, high), or None for a band without valid pixels.
    """
    step = max(1, math.ceil(math.sqrt(band.size / PERCENTILE_SAMPLE)))
    sub = band[::step, ::step]
    values = sub[np.isfinite(sub)]
    if values.size == 0 and step > 1:
        values = band[np.isfinite(band)]  # a few valid pixels the grid missed
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, STRETCH_PERCENTILES)
    return float(lo), float(hi)


def apply_stretch(band: npt.NDArray[np.floating], limits: tuple[float, float] | None) -> FloatArray:
    """Map ``limits`` to [0, 1] (clipped); nodata to 0; a flat band to :data:`FLAT_BAND_VALUE`.

    Args:
        band: (H, W) reflectance, NaN = nodata.
        limits: From :func:`stretch_limits`.

    Returns:
        float32 (H, W) in [0, 1].
    """
    band = np.asarray(band, dtype=np.float32)
    if limits is None:
        return np.zeros(band.shape, dtype=np.float32)
    lo, hi = limits
    if not hi > lo:
        flat: FloatArray = np.where(np.isfinite(band), FLAT_BAND_VALUE, 0.0).astype(np.float32)
        return flat
    out: FloatArray = (band - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def stretch_band(band: npt.NDArray[np.floating]) -> FloatArray:
    """Per-band display stretch: the 2nd-98th percentile of the valid pixels to [0, 1].

    Also what a contact sheet should show: the image as the model saw it.

    Args:
        band: (H, W) reflectance; NaN is nodata.

    Returns:
        float32 (H, W) in [0, 1]; nodata -> 0; a flat band -> :data:`FLAT_BAND_VALUE`.
    """
    band = np.asarray(band, dtype=np.float32)
    return apply_stretch(band, stretch_limits(band))


def preprocess_rgb(
    rgb: npt.NDArray[np.floating],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> FloatArray:
    """Reflectance RGB to a CLIP input: stretch, nodata to 0, resize, normalise.

    The stretch limits come from the full-resolution band. When shrinking, the band is resized
    first (area average; a pixel that covers any nodata stays nodata) and stretched at the
    model's size, which is 4-5x fewer pixels for a 484 px chip; when enlarging, it is stretched
    first and resized bicubically, as CLIP's own preprocessing does. A non-square chip is
    squashed to S x S, not cropped: nothing is left out. Thread-safe (no shared state): the
    embed stage calls it from its decoder threads.

    Args:
        rgb: (3, H, W) reflectance, NaN = nodata.
        size: The model's input size S.
        mean: Per-channel normalisation mean (the model's).
        std: Per-channel normalisation std.

    Returns:
        float32 (3, S, S).

    Raises:
        EmbedError: ``rgb`` is not (3, H, W).
    """
    import cv2

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[0] != 3 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise EmbedError(
            f"preprocess expects a (3, H, W) RGB array, got shape {arr.shape}; pass the chip's "
            "red, green and blue bands"
        )
    h, w = arr.shape[1:]
    shrink = h >= size and w >= size and (h, w) != (size, size)
    out = np.empty((3, size, size), dtype=np.float32)
    for c in range(3):
        band = np.asarray(arr[c], dtype=np.float32)
        limits = stretch_limits(band)
        if (h, w) == (size, size):
            shown = apply_stretch(band, limits)
        elif shrink:
            small = np.asarray(
                cv2.resize(band, (size, size), interpolation=cv2.INTER_AREA), np.float32
            )
            shown = apply_stretch(small, limits)
        else:
            big = cv2.resize(
                apply_stretch(band, limits), (size, size), interpolation=cv2.INTER_CUBIC
            )
            shown = np.clip(big, 0.0, 1.0)
        np.subtract(shown, np.float32(mean[c]), out=out[c])
        out[c] *= np.float32(1.0 / std[c])
    return out


# --- the embedder ----------------------------------------------------------------------------


def _device_paths(device: str) -> tuple[str, ...]:
    return CUDA_PATHS if device.startswith("cuda") else CPU_PATHS


def _named_path(name: str, device: str) -> EmbedPath:
    on_cuda = device.startswith("cuda")
    key = f"cuda-{name}" if on_cuda and not name.startswith("cuda-") else name
    allowed = CUDA_PATHS if on_cuda else CPU_NAMED_PATHS
    if key not in allowed:
        raise EmbedError(
            f"unknown precision {name!r} for device {device}; use auto or one of "
            f"{', '.join(allowed)}"
        )
    return BUILTIN_PATHS[key]


class ClipEmbedder:
    """A CLIP image tower ready to embed preprocessed batches on the chosen path.

    Build it with :meth:`load`; the constructor only stores what ``load`` prepared.

    Attributes:
        model_name: Label for the output table (e.g. ``"ViT-B-32/laion2b_s34b_b79k"``).
        weights_sha256: SHA-256 of the weights file.
        image_size: The model's input size S (images are S x S).
        dim: Embedding dimension.
        mean: Normalisation mean (per channel) of the model.
        std: Normalisation std.
        device: Torch device string.
        path: Name of the path :meth:`embed` runs on.
        probe: The probe's report (None when the precision was forced).
    """

    def __init__(
        self,
        *,
        runner: Runner,
        model_name: str,
        weights_sha256: str,
        image_size: int,
        dim: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: str,
        path: str,
        probe: ProbeReport | None,
    ) -> None:
        self._runner = runner
        self.model_name = model_name
        self.weights_sha256 = weights_sha256
        self.image_size = image_size
        self.dim = dim
        self.mean = mean
        self.std = std
        self.device = device
        self.path = path
        self.probe = probe

    @classmethod
    def load(
        cls,
        spec: WeightsSpec,
        *,
        device: str = "cpu",
        precision: str = "auto",
        probe_sample: FloatArray | None = None,
        cache_dir: Path | None = None,
        threads: int | None = None,
        paths: Sequence[str | EmbedPath] | None = None,
        probe_images: Sequence[npt.NDArray[np.floating]] | None = None,
        min_cosine: float = MIN_COSINE,
    ) -> ClipEmbedder:
        """Resolve the weights, build the image tower and pick the path to run it on.

        Args:
            spec: Which weights (checked first: a missing file fails before torch work).
            device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
            precision: ``"auto"`` (probe), or a path name to force: ``"fp32"``, ``"bf16"``,
                ``"int8"``, ``"onnxruntime"``, ``"openvino"``; on CUDA ``"fp32"``, ``"fp16"``,
                ``"bf16"``.
            probe_sample: Preprocessed float32 images (B, 3, S, S) for the probe; a seeded random
                batch of :data:`PROBE_IMAGES` when None and no ``probe_images``. Real images
                give a truer cosine check.
            cache_dir: The Hugging Face hub cache; huggingface_hub's default when None.
            threads: torch intra-op threads (process-wide setting); torch's default when None.
            paths: Candidates for ``"auto"`` (names or :class:`EmbedPath`); all the device's
                built-in paths when None. The fp32 reference is always measured.
            probe_images: Alternative to ``probe_sample``: raw reflectance RGB arrays (3, H, W)
                (e.g. the first chips of the dataset), preprocessed here with the model's own
                size and normalisation, which the caller does not know before loading.
            min_cosine: The agreement with fp32 a path needs in the probe.

        Returns:
            The embedder.

        Raises:
            WeightsError: Weights missing, unknown or not fitting the architecture.
            EmbedDeviceError: CUDA asked for but not available.
            EmbedError: Unknown precision or bad probe sample.
        """
        import torch

        resolved, arch = _resolve(spec, cache_dir)
        if not (device == "cpu" or device.startswith("cuda")):
            raise EmbedError(f"unknown device {device!r}; use cpu or cuda")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EmbedDeviceError("--device cuda but no CUDA device; use --device cpu")
        forced = None if precision == "auto" else _named_path(precision, device)
        if probe_sample is not None and probe_images is not None:
            raise EmbedError("pass probe_sample or probe_images, not both")
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))

        visual = _build_visual(arch, resolved)
        size = _tower_image_size(visual)
        pcfg = dict(arch.preprocess_cfg)
        mean = tuple(float(v) for v in pcfg.get("mean", _openai_mean()))
        std = tuple(float(v) for v in pcfg.get("std", _openai_std()))
        if len(mean) != 3 or len(std) != 3:
            raise WeightsError(f"model {arch.name} does not take 3-channel RGB input")
        dim = int(arch.model_cfg["embed_dim"])

        reference = _named_path("fp32", device)
        probe: ProbeReport | None = None
        if precision == "auto":
            if probe_images is not None and len(probe_images) > 0:
                sample = np.stack([preprocess_rgb(im, size, mean, std) for im in probe_images])
            elif probe_sample is None:
                rng = np.random.default_rng(PROBE_SEED)
                sample = rng.standard_normal((PROBE_IMAGES, 3, size, size), dtype=np.float32)
            else:
                sample = np.ascontiguousarray(probe_sample, dtype=np.float32)
                if sample.ndim != 4 or sample.shape[1:] != (3, size, size) or len(sample) == 0:
                    raise EmbedError(
                        f"probe_sample must be (B, 3, {size}, {size}), got {sample.shape}; "
                        "preprocess the images first"
                    )
            names = paths if paths is not None else _device_paths(device)
            candidates = [p if isinstance(p, EmbedPath) else _named_path(p, device) for p in names]
            probe, runner = probe_paths(
                visual,
                sample,
                candidates,
                reference=reference,
                device=device,
                chunk=min(PROBE_CHUNK, len(sample)),
                min_cosine=min_cosine,
            )
            chosen = probe.chosen
            log.info(probe.line())
        else:
            assert forced is not None
            try:
                runner = forced.build(visual, device)
            except Exception as exc:  # noqa: BLE001 - e.g. the optional runtime is missing
                raise EmbedError(
                    f"precision {precision} is not available here ({_first_line(exc)}); "
                    "use auto or fp32"
                ) from None
            chosen = forced.name
        return cls(
            runner=runner,
            model_name=resolved.label,
            weights_sha256=resolved.sha256,
            image_size=size,
            dim=dim,
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            device=device,
            path=chosen,
            probe=probe,
        )

    def preprocess(self, rgb: npt.NDArray[np.floating]) -> FloatArray:
        """Reflectance RGB (3, H, W), NaN = nodata, to a model input (3, S, S) float32.

        Per band: 2-98 percentile stretch of the valid pixels to [0, 1] (a flat band becomes
        0.5), nodata to 0, resize to S x S (area when shrinking, bicubic when enlarging; a
        non-square chip is squashed, not cropped, so nothing is left out), then the model's
        normalisation (:func:`preprocess_rgb`). Thread-safe.

        Args:
            rgb: (3, H, W) reflectance.

        Returns:
            float32 (3, S, S).
        """
        return preprocess_rgb(rgb, self.image_size, self.mean, self.std)

    def embed(self, batch: FloatArray) -> FloatArray:
        """Embed a preprocessed batch on the chosen path.

        Args:
            batch: float32 (B, 3, S, S), e.g. stacked :meth:`preprocess` outputs.

        Returns:
            float32 (B, dim), each row L2-normalised (an all-zero output stays zero).

        Raises:
            EmbedError: The batch does not have the model's input shape.
        """
        arr = np.asarray(batch)
        if arr.ndim != 4 or arr.shape[1:] != (3, self.image_size, self.image_size):
            raise EmbedError(
                f"embed expects (B, 3, {self.image_size}, {self.image_size}), got {arr.shape}; "
                "pass preprocessed images"
            )
        if len(arr) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(self._runner(np.ascontiguousarray(arr, dtype=np.float32)), np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.maximum(norms, np.float32(1e-12), out=norms)
        normalised: FloatArray = (out / norms).astype(np.float32, copy=False)
        return normalised


def _openai_mean() -> tuple[float, ...]:
    from open_clip.constants import OPENAI_DATASET_MEAN

    return tuple(OPENAI_DATASET_MEAN)


def _openai_std() -> tuple[float, ...]:
    from open_clip.constants import OPENAI_DATASET_STD

    return tuple(OPENAI_DATASET_STD)
