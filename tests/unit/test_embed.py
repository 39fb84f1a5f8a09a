"""harvest.embed: weights resolution (HF cache, checkpoints), loading, preprocessing, probe.

Every model here is a tiny CLIP architecture written by the test as an open_clip model-config
JSON, randomly initialised with a fixed seed and saved as a real checkpoint (or a real Hugging
Face cache layout), then loaded through the same path the embed stage uses.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harvest.embed import (
    FLAT_BAND_VALUE,
    MIN_COSINE,
    ClipEmbedder,
    EmbedDeviceError,
    EmbedError,
    EmbedPath,
    Runner,
    WeightsError,
    WeightsSpec,
    file_sha256,
    preprocess_rgb,
    resolve_weights,
)
from harvest.errors import HarvestError

SIZE = 64
DIM = 32
TINY_CFG: dict[str, Any] = {
    "embed_dim": DIM,
    "vision_cfg": {
        "image_size": SIZE,
        "layers": 2,
        "width": 64,
        "patch_size": 16,
        "head_width": 32,
    },
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}
HF_REPO = "harvest-test/tiny-clip"
VIT_B_32_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


def _tiny_model(seed: int = 0, cfg: dict[str, Any] | None = None) -> torch.nn.Module:
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(**(cfg or TINY_CFG)).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny model, its config JSON and its checkpoint in three wrappings."""
    root = tmp_path_factory.mktemp("tiny-clip")
    cfg_path = root / "tiny-clip.json"
    cfg_path.write_text(json.dumps(TINY_CFG))
    model = _tiny_model()
    state = model.state_dict()
    plain = root / "plain.pt"
    torch.save(state, plain)
    wrapped = root / "wrapped.pt"  # as DistributedDataParallel training scripts save it
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    from safetensors.torch import save_file

    safe = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    return {
        "root": root,
        "cfg": cfg_path,
        "model": model,
        "plain": plain,
        "wrapped": wrapped,
        "safe": safe,
    }


def _images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE), dtype=np.float32)


def _reference(model: Any, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = model.encode_image(torch.from_numpy(batch), normalize=True)
    return out.numpy()


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert "\n" not in text and text, text
    return text


# --- loading: the real paths ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["plain", "wrapped", "safe"])
def test_checkpoint_gives_the_embeddings_of_the_model(tiny: dict[str, Any], which: str) -> None:
    spec = WeightsSpec(model=str(tiny["cfg"]), checkpoint=tiny[which])
    emb = ClipEmbedder.load(spec, precision="fp32")
    batch = _images(5)
    got = emb.embed(batch)
    np.testing.assert_allclose(got, _reference(tiny["model"], batch), atol=2e-6)
    assert emb.image_size == SIZE and emb.dim == DIM
    assert emb.model_name == f"tiny-clip@{tiny[which].name}"
    assert emb.weights_sha256 == hashlib.sha256(tiny[which].read_bytes()).hexdigest()
    assert emb.path == "fp32" and emb.probe is None


def test_image_tower_alone_is_accepted(tiny: dict[str, Any], tmp_path: Path) -> None:
    visual_only = tmp_path / "visual.pt"
    torch.save(tiny["model"].visual.state_dict(), visual_only)
    emb = ClipEmbedder.load(
        WeightsSpec(model=str(tiny["cfg"]), checkpoint=visual_only), precision="fp32"
    )
    batch = _images(2)
    np.testing.assert_allclose(emb.embed(batch), _reference(tiny["model"], batch), atol=2e-6)


def _fake_hf_cache(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    """The layout huggingface_hub writes: blobs by hash, snapshot symlinks, refs/main."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return root


def test_hf_hub_model_loads_from_the_local_cache_offline(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    config = {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    weights = tiny["safe"].read_bytes()
    hub = _fake_hf_cache(
        tmp_path / "hub",
        HF_REPO,
        {
            "open_clip_config.json": json.dumps(config).encode(),
            "open_clip_model.safetensors": weights,
        },
    )
    emb = ClipEmbedder.load(WeightsSpec(model=f"hf-hub:{HF_REPO}"), cache_dir=hub, precision="fp32")
    batch = _images(3)
    np.testing.assert_allclose(emb.embed(batch), _reference(tiny["model"], batch), atol=2e-6)
    assert emb.model_name == f"hf-hub:{HF_REPO}"
    assert emb.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert emb.mean == (0.5, 0.5, 0.5) and emb.std == (0.25, 0.25, 0.25)


def test_hf_hub_config_without_weights_names_the_file(tiny: dict[str, Any], tmp_path: Path) -> None:
    hub = _fake_hf_cache(
        tmp_path, HF_REPO, {"open_clip_config.json": json.dumps({"model_cfg": TINY_CFG}).encode()}
    )
    with pytest.raises(WeightsError) as err:
        resolve_weights(WeightsSpec(model=f"hf-hub:{HF_REPO}"), cache_dir=hub)
    assert f"{HF_REPO}:open_clip_model.safetensors" in _one_line(err)


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (("open_clip_pytorch_model.bin",), "open_clip_pytorch_model.bin"),
        (
            ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"),
            "open_clip_model.safetensors",
        ),
    ],
)
def test_pretrained_tag_resolves_to_the_file_open_clip_would_load(
    tmp_path: Path, present: tuple[str, ...], expected: str
) -> None:
    files = {name: f"weights of {name}".encode() for name in present}
    hub = _fake_hf_cache(tmp_path, VIT_B_32_REPO, files)
    got = resolve_weights(WeightsSpec("ViT-B-32", "laion2b_s34b_b79k"), cache_dir=hub)
    assert got.path.name == expected
    assert got.sha256 == hashlib.sha256(files[expected]).hexdigest()
    assert got.label == "ViT-B-32/laion2b_s34b_b79k"


# --- errors: one line, fast --------------------------------------------------------------------


def test_missing_pretrained_weights_fail_at_once_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants
    import open_clip  # noqa: F401 - imported before the clock starts: the check itself is timed

    # Even a spec that allows downloads must not try while huggingface_hub is offline.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    for allow in (False, True):
        spec = WeightsSpec("ViT-B-32", "laion2b_s34b_b79k", allow_download=allow)
        t0 = time.perf_counter()
        with pytest.raises(WeightsError) as err:
            resolve_weights(spec, cache_dir=empty)
        assert time.perf_counter() - t0 < 1.0
        text = _one_line(err)
        assert f"{VIT_B_32_REPO}:open_clip_model.safetensors" in text
        assert f"hf download {VIT_B_32_REPO} open_clip_model.safetensors" in text
        assert "--checkpoint PATH" in text and str(empty) in text
        assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, HarvestError)
    t0 = time.perf_counter()
    with pytest.raises(WeightsError):
        ClipEmbedder.load(WeightsSpec("ViT-B-32", "laion2b_s34b_b79k"), cache_dir=empty)
    assert time.perf_counter() - t0 < 1.0


def test_missing_checkpoint(tiny: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as err:
        resolve_weights(WeightsSpec(str(tiny["cfg"]), checkpoint=tmp_path / "nope.pt"))
    assert "nope.pt does not exist" in _one_line(err)


def test_missing_checkpoint_is_said_before_torch_is_imported(tmp_path: Path) -> None:
    """The CLI answers a wrong --checkpoint at once: no open_clip / torch import first."""
    code = (
        "import sys\n"
        "from harvest.embed import WeightsSpec, resolve_weights\n"
        "from harvest.embed import WeightsError\n"
        "try:\n"
        f"    resolve_weights(WeightsSpec('ViT-B-32', checkpoint={str(tmp_path / 'no.pt')!r}))\n"
        "except WeightsError as exc:\n"
        "    print('torch' in sys.modules, 'open_clip' in sys.modules, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("False False ") and "no.pt does not exist" in out.stdout


def test_checkpoint_without_image_weights(tiny: dict[str, Any], tmp_path: Path) -> None:
    text_only = tmp_path / "text-only.pt"
    state = tiny["model"].state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("visual.")}, text_only)
    n_visual = len(tiny["model"].visual.state_dict())
    with pytest.raises(WeightsError) as err:
        ClipEmbedder.load(WeightsSpec(str(tiny["cfg"]), checkpoint=text_only), precision="fp32")
    text = _one_line(err)
    assert f"lacks {n_visual} of the {n_visual} image-tower weights" in text
    assert "transformer." in text  # what the file holds instead


def test_checkpoint_of_another_architecture(tiny: dict[str, Any], tmp_path: Path) -> None:
    wider = json.loads(json.dumps(TINY_CFG))
    wider["vision_cfg"]["width"] = 96
    other = tmp_path / "wider.pt"
    torch.save(_tiny_model(cfg=wider).state_dict(), other)
    with pytest.raises(WeightsError) as err:
        ClipEmbedder.load(WeightsSpec(str(tiny["cfg"]), checkpoint=other), precision="fp32")
    assert "does not fit tiny-clip" in _one_line(err)


def test_checkpoint_that_is_not_a_state_dict(tiny: dict[str, Any], tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError) as err:
        ClipEmbedder.load(WeightsSpec(str(tiny["cfg"]), checkpoint=junk), precision="fp32")
    assert "cannot read checkpoint" in _one_line(err)


def test_unknown_model_name() -> None:
    with pytest.raises(WeightsError) as err:
        resolve_weights(WeightsSpec("ViT-B-33", "laion2b_s34b_b79k"))
    text = _one_line(err)
    assert "unknown model 'ViT-B-33'" in text and "ViT-B-32" in text  # a close match
    assert "open_clip.list_models()" in text


def test_unknown_tag_lists_the_known_ones() -> None:
    with pytest.raises(WeightsError) as err:
        resolve_weights(WeightsSpec("ViT-B-32", "laion9b_nope"))
    text = _one_line(err)
    assert "unknown pretrained tag 'laion9b_nope'" in text and "laion2b_s34b_b79k" in text


def test_custom_config_needs_a_checkpoint(tiny: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as err:
        resolve_weights(WeightsSpec(str(tiny["cfg"])))
    assert "--checkpoint PATH" in _one_line(err)
    with pytest.raises(WeightsError) as err:
        resolve_weights(WeightsSpec(str(tmp_path / "missing.json"), checkpoint=tiny["plain"]))
    assert "does not exist" in _one_line(err)


def test_unknown_precision_and_missing_cuda(tiny: dict[str, Any]) -> None:
    spec = WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"])
    with pytest.raises(EmbedError) as err:
        ClipEmbedder.load(spec, precision="fp8")
    assert "fp8" in _one_line(err)
    if not torch.cuda.is_available():
        with pytest.raises(EmbedDeviceError) as derr:
            ClipEmbedder.load(spec, device="cuda")
        assert _one_line(derr) == "--device cuda but no CUDA device; use --device cpu"


def test_sha256_is_streamed_and_cached(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * (5 << 20))
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    f.write_bytes(b"y" * (5 << 20) + b"z")  # new size and mtime: hashed again
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()


# --- embed and preprocess ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp32_embedder(tiny: dict[str, Any]) -> ClipEmbedder:
    return ClipEmbedder.load(
        WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"]), precision="fp32"
    )


def test_embed_output(fp32_embedder: ClipEmbedder) -> None:
    out = fp32_embedder.embed(_images(7))
    assert out.shape == (7, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert fp32_embedder.embed(_images(1)[:0]).shape == (0, DIM)
    with pytest.raises(EmbedError):
        fp32_embedder.embed(np.zeros((2, 3, SIZE + 1, SIZE), np.float32))


def _unnormalise(x: np.ndarray, emb: ClipEmbedder) -> np.ndarray:
    mean = np.asarray(emb.mean, np.float32)[:, None, None]
    std = np.asarray(emb.std, np.float32)[:, None, None]
    return x * std + mean


def test_preprocess_shape_and_range(fp32_embedder: ClipEmbedder) -> None:
    rng = np.random.default_rng(3)
    for shape in [(3, 200, 200), (3, 40, 50), (3, SIZE, SIZE)]:
        # a smooth field plus noise: resizing keeps its range (pure noise would average out)
        ramp = np.linspace(0.0, 0.4, shape[2], dtype=np.float32)[None, None, :]
        rgb = (ramp + rng.gamma(2.0, 0.01, size=shape)).astype(np.float32)
        x = fp32_embedder.preprocess(rgb)
        assert x.shape == (3, SIZE, SIZE) and x.dtype == np.float32
        shown = _unnormalise(x, fp32_embedder)
        assert shown.min() >= -1e-5 and shown.max() <= 1 + 1e-5
        assert shown.min() < 0.05 and shown.max() > 0.95  # stretched to the full range
    with pytest.raises(EmbedError):
        fp32_embedder.preprocess(np.zeros((4, 10, 10), np.float32))


def test_preprocess_stretch_flat_band_and_nodata(fp32_embedder: ClipEmbedder) -> None:
    ramp = np.linspace(0.0, 0.3, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    rgb = np.stack([ramp, np.full_like(ramp, 0.07), ramp.copy()])
    rgb[2, :8, :] = np.nan  # nodata rows
    shown = _unnormalise(fp32_embedder.preprocess(rgb), fp32_embedder)
    # 2nd percentile -> 0, 98th -> 1: the darkest and brightest 2 % are clipped.
    assert shown[0].min() == pytest.approx(0.0, abs=1e-5)
    assert shown[0].max() == pytest.approx(1.0, abs=1e-5)
    assert np.mean(shown[0] <= 1e-6) == pytest.approx(0.02, abs=0.002)
    np.testing.assert_allclose(shown[1], FLAT_BAND_VALUE, atol=1e-5)
    np.testing.assert_allclose(shown[2, :8], 0.0, atol=1e-5)
    assert np.isfinite(shown).all()
    # the stretch of band 2 ignores its NaN rows: its valid part spans 0..1 again
    assert shown[2, 8:].max() == pytest.approx(1.0, abs=1e-5)
    all_nan = np.full((3, 100, 100), np.nan, np.float32)
    np.testing.assert_allclose(
        _unnormalise(fp32_embedder.preprocess(all_nan), fp32_embedder), 0.0, atol=1e-5
    )


def test_preprocess_nodata_survives_the_resize(fp32_embedder: ClipEmbedder) -> None:
    rng = np.random.default_rng(6)
    rgb = (0.1 + 0.2 * rng.random((3, 256, 256))).astype(np.float32)
    rgb[:, :64, :] = np.nan  # the top quarter is nodata in every band
    shown = _unnormalise(fp32_embedder.preprocess(rgb), fp32_embedder)
    assert np.isfinite(shown).all()
    np.testing.assert_allclose(shown[:, : SIZE // 4], 0.0, atol=1e-5)
    assert (shown[:, SIZE // 4 :] > 0).mean() > 0.9


def test_preprocess_is_thread_safe(fp32_embedder: ClipEmbedder) -> None:
    rng = np.random.default_rng(4)
    images = [rng.random((3, 150, 150), dtype=np.float32) for _ in range(24)]
    sequential = [fp32_embedder.preprocess(im) for im in images]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(fp32_embedder.preprocess, images))
    for a, b in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_preprocess_rgb_uses_the_given_normalisation() -> None:
    rgb = np.random.default_rng(5).random((3, 32, 32), dtype=np.float32)
    a = preprocess_rgb(rgb, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    b = preprocess_rgb(rgb, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    np.testing.assert_allclose(b, (a - 0.5) / 0.5, atol=1e-6)


# --- the probe -----------------------------------------------------------------------------------


def _broken(visual: torch.nn.Module, device: str) -> Runner:
    """A fast path that gives wrong embeddings (what a buggy reduced-precision kernel does)."""
    rng = np.random.default_rng(0)

    def run(batch: np.ndarray) -> np.ndarray:
        return rng.standard_normal((len(batch), DIM)).astype(np.float32)

    return run


def _unavailable(visual: torch.nn.Module, device: str) -> Runner:
    raise ImportError("No module named 'fancy_runtime'")


def test_probe_picks_a_path_that_agrees_with_fp32(tiny: dict[str, Any]) -> None:
    spec = WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"])
    emb = ClipEmbedder.load(spec, precision="auto", paths=["fp32", "bf16", "int8"])
    assert emb.probe is not None
    names = [t.name for t in emb.probe.timings]
    assert names == ["fp32", "bf16", "int8"]
    chosen = {t.name: t for t in emb.probe.timings}[emb.probe.chosen]
    assert chosen.ok and chosen.min_cosine >= MIN_COSINE and emb.path == emb.probe.chosen
    assert all(t.images_per_s > 0 for t in emb.probe.timings)
    assert chosen.images_per_s == max(t.images_per_s for t in emb.probe.timings if t.ok)
    assert emb.probe.line().startswith(f"embedding path: {emb.probe.chosen} (")
    batch = _images(4)
    cos = np.sum(emb.embed(batch) * _reference(tiny["model"], batch), axis=1)
    assert cos.min() >= MIN_COSINE


def test_probe_rejects_a_fast_wrong_path_and_falls_back_to_fp32(tiny: dict[str, Any]) -> None:
    spec = WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"])
    sample = _images(8, seed=9)
    emb = ClipEmbedder.load(
        spec,
        probe_sample=sample,
        paths=[EmbedPath("broken", _broken), EmbedPath("fancy", _unavailable)],
    )
    assert emb.probe is not None and emb.probe.chosen == "fp32" and emb.path == "fp32"
    timings = {t.name: t for t in emb.probe.timings}
    assert timings["broken"].images_per_s > timings["fp32"].images_per_s  # faster, but wrong
    assert not timings["broken"].ok and timings["broken"].min_cosine < MIN_COSINE
    assert not timings["fancy"].ok and timings["fancy"].images_per_s == 0
    line = emb.probe.line()
    assert "broken" in line and "rejected: min cosine" in line
    assert "fancy unavailable (No module named 'fancy_runtime')" in line
    np.testing.assert_allclose(emb.embed(sample), _reference(tiny["model"], sample), atol=2e-6)


def test_probe_stops_a_slow_path_early(tiny: dict[str, Any]) -> None:
    """A path far slower than fp32 (bf16 on an AVX2-only CPU) is not run on the whole sample."""
    calls: list[int] = []

    def slow(visual: torch.nn.Module, device: str) -> Runner:
        def run(batch: np.ndarray) -> np.ndarray:
            calls.append(len(batch))
            time.sleep(0.25)
            with torch.inference_mode():
                return visual(torch.from_numpy(batch)).numpy()

        return run

    spec = WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"])
    emb = ClipEmbedder.load(spec, probe_sample=_images(48), paths=[EmbedPath("slow", slow)])
    assert emb.probe is not None and emb.probe.chosen == "fp32"
    slow_timing = emb.probe.timings[1]
    assert slow_timing.ok and "stopped after 16 images" in slow_timing.note
    assert calls == [16, 16]  # the untimed warm-up chunk and one timed chunk, not all three


def test_probe_sample_must_be_preprocessed(tiny: dict[str, Any]) -> None:
    spec = WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"])
    with pytest.raises(EmbedError) as err:
        ClipEmbedder.load(spec, probe_sample=np.zeros((2, 3, 10, 10), np.float32))
    assert "(B, 3, 64, 64)" in _one_line(err)


def test_probe_on_raw_chips(tiny: dict[str, Any]) -> None:
    spec = WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"])
    rng = np.random.default_rng(7)
    chips = [rng.random((3, 100, 100), dtype=np.float32) for _ in range(4)]
    emb = ClipEmbedder.load(spec, probe_images=chips, paths=["fp32", "int8"])
    assert emb.probe is not None and [t.name for t in emb.probe.timings] == ["fp32", "int8"]
    with pytest.raises(EmbedError):
        ClipEmbedder.load(spec, probe_images=chips, probe_sample=_images(2))


def test_forced_path_that_is_not_installed(tiny: dict[str, Any]) -> None:
    if importlib.util.find_spec("onnxruntime") is not None:
        pytest.skip("onnxruntime is installed here: nothing is missing")
    spec = WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"])
    with pytest.raises(EmbedError) as err:
        ClipEmbedder.load(spec, precision="onnxruntime")
    assert "precision onnxruntime is not available here" in _one_line(err)


def test_forced_reduced_precision_is_close_to_fp32(tiny: dict[str, Any]) -> None:
    spec = WeightsSpec(str(tiny["cfg"]), checkpoint=tiny["plain"])
    batch = _images(4)
    ref = _reference(tiny["model"], batch)
    err = {}
    for name in ("bf16", "bf16-full", "int8"):
        emb = ClipEmbedder.load(spec, precision=name)
        assert emb.path == name and emb.probe is None
        got = emb.embed(batch)
        assert got.dtype == np.float32
        err[name] = float(np.max(np.linalg.norm(got - ref, axis=1)))
        assert np.sum(got * ref, axis=1).min() >= 0.99
    # bf16 keeps the residual stream in fp32: closer to fp32 than the all-bf16 cast
    assert err["bf16"] < err["bf16-full"]


def test_importing_the_module_does_not_import_torch() -> None:
    code = (
        "import sys, harvest.embed\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'open_clip', 'cv2'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


def test_missing_pretrained_weights_are_said_before_torch_is_imported(tmp_path: Path) -> None:
    """The pretrained-tag route too: open_clip's tables are read without importing torch."""
    code = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        "from harvest.embed import WeightsError, WeightsSpec, resolve_weights\n"
        "try:\n"
        "    spec = WeightsSpec('ViT-B-32', 'laion2b_s34b_b79k')\n"
        f"    resolve_weights(spec, cache_dir={str(tmp_path)!r})\n"
        "except WeightsError as exc:\n"
        "    print('torch' in sys.modules, 'open_clip' in sys.modules, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("False False ")
    assert f"{VIT_B_32_REPO}:open_clip_model.safetensors" in out.stdout


def test_the_torch_free_tables_are_open_clips() -> None:
    import open_clip

    from harvest.embed import _OpenClipTables

    # Build the light tables even though open_clip is imported in this process.
    saved = sys.modules.pop("open_clip")
    try:
        light = _OpenClipTables()
        assert light.full is None and light.pretrained is not None
    finally:
        sys.modules["open_clip"] = saved
    for name in ("ViT-B-32", "ViT-L-14", "RN50"):
        assert light.get_model_config(name) == open_clip.get_model_config(name)
        assert light.list_pretrained_tags_by_model(name) == list(
            open_clip.list_pretrained_tags_by_model(name)
        )
        for tag in open_clip.list_pretrained_tags_by_model(name):
            assert light.get_pretrained_cfg(name, tag) == dict(
                open_clip.get_pretrained_cfg(name, tag)
            )
    assert sorted(light.list_models()) == sorted(open_clip.list_models())
