"""Demo CLIP weights: a small CLIP architecture, randomly initialised from a seed.

No trained CLIP can be downloaded offline, so the demo prunes with these when the Hugging Face
cache holds no ViT-B-32 weights. A random vision transformer still maps colour and texture
statistics to nearby vectors, so the clusters are not arbitrary; but they are not CLIP's
semantics: the demo exercises the machinery (loading, embedding, clustering, the selection
files), not the quality of a real selection. Written atomically, reused when present.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from harvest.diskio import atomic_write_bytes

DEMO_CLIP_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 96, "layers": 4, "width": 192, "patch_size": 16, "head_width": 64},
    "text_cfg": {"context_length": 16, "vocab_size": 256, "width": 64, "heads": 2, "layers": 1},
}


@dataclass(frozen=True)
class DemoClip:
    """Where the demo weights are."""

    config: Path
    checkpoint: Path


def write_demo_clip(folder: Path, seed: int = 0) -> DemoClip:
    """Write (or reuse) ``folder/demo-clip.json`` and ``folder/demo-clip.pt``."""
    import open_clip
    import torch

    config = folder / "demo-clip.json"
    checkpoint = folder / "demo-clip.pt"
    if not checkpoint.exists() or not config.exists():
        generator_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = open_clip.CLIP(**DEMO_CLIP_CONFIG)
        finally:
            torch.random.set_rng_state(generator_state)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic_write_bytes(config, json.dumps(DEMO_CLIP_CONFIG, indent=2).encode())
        atomic_write_bytes(checkpoint, buf.getvalue())
    return DemoClip(config, checkpoint)
