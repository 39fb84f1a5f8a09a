"""A built dataset as a TACO file (the format SEN2NAIP's authors now publish in).

Written with ``tacotoolbox`` (the ``taco`` extra: ``pip install harvest-eo[taco]``), never by
hand: one FOLDER sample per kept sample of one product, whose FILE children are the sample's
GeoTIFFs (``lr``, ``hr``, ``scl``, ``lr_statistical``...: the file stems, lower case), with the
manifest's fields as sample metadata (``split``, the QA metrics, the source scene ids). TACO
wants every root folder to hold the same children ("position-isomorphic"), so one file holds
one product (``cross-sensor``, ``kept`` or ``synthetic``).

Reading it back needs ``tacoreader``, which (2.4.21) calls a DuckDB method that DuckDB 2
removed: read exports in an environment with ``duckdb<2`` (harvest itself needs DuckDB 2 for
stac-geoparquet). The tests do so in their own venv (``tests/integration/setup_taco_reader.sh``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harvest.errors import ConfigError, InputFileError
from harvest.progress import NO_PROGRESS, Progress

PRODUCTS = ("cross-sensor", "kept", "synthetic")
# Manifest columns copied into every sample's metadata (when the manifest has them).
SAMPLE_FIELDS = (
    "split", "qa1_px", "qa2_deg", "cloud_fraction", "nodata_fraction", "dt_hours",
    "s2_id", "naip_id", "lr_id", "hr_id", "epsg",
)  # fmt: skip


@dataclass(frozen=True)
class TacoExport:
    """What :func:`write_taco` wrote."""

    path: Path
    product: str
    n_samples: int
    files_per_sample: tuple[str, ...]


def _import_tacotoolbox() -> Any:
    try:
        import tacotoolbox
    except ImportError:
        raise ConfigError(
            "--format taco needs tacotoolbox: pip install 'harvest-eo[taco]' (or pip install "
            "tacotoolbox)"
        ) from None
    return tacotoolbox


def write_taco(
    dataset: Path,
    output: Path,
    record: Mapping[str, Any],
    product: str | None = None,
    *,
    progress: Progress = NO_PROGRESS,
) -> TacoExport:
    """Write the kept samples of one product of ``dataset`` as a TACO zip at ``output``.

    Args:
        dataset: A folder written by ``harvest build`` (or ``harvest fetch`` / ``degrade``).
        output: The ``.tacozip`` (or ``.zip``) file; written under a temporary name and renamed.
        record: ``dataset.json`` (id, version, description, licences), or an empty mapping.
        product: ``cross-sensor``, ``kept`` or ``synthetic``; default: the first one present.
        progress: A bar over the samples.

    Raises:
        ConfigError: tacotoolbox is not installed, or an unknown product.
        InputFileError: no kept sample of that product, or samples with different files.
    """
    tacotoolbox = _import_tacotoolbox()
    from tacotoolbox.datamodel import Sample, Taco, Tortilla
    from tacotoolbox.taco.datamodel import Provider

    from harvest.diskio import temp_name
    from harvest.store import json_safe

    if product is not None and product not in PRODUCTS:
        raise ConfigError(f"--product {product!r} is not one of {', '.join(PRODUCTS)}")
    chosen = product or next((p for p in PRODUCTS if (dataset / p).is_dir()), None)
    if chosen is None or not (dataset / chosen).is_dir():
        raise InputFileError(
            f"{dataset} has no {chosen or 'cross-sensor, kept or synthetic'}/ folder of kept "
            "samples: export a folder written by harvest build, fetch or degrade"
        )
    folders = _sample_folders(dataset / chosen, chosen)
    if not folders:
        raise InputFileError(f"{dataset / chosen} holds no sample: nothing to export")
    meta = _manifest_fields(dataset)
    layout: tuple[str, ...] | None = None
    samples = []
    with progress.bar("export", len(folders)) as bar:
        for sample_id, folder in folders:
            files = tuple(sorted(p.name for p in folder.iterdir() if p.suffix == ".tif"))
            if layout is None:
                layout = files
            elif files != layout:
                raise InputFileError(
                    f"{folder} holds {', '.join(files)}, not {', '.join(layout)} as the first "
                    "sample: TACO wants every sample to hold the same files; export another "
                    "product"
                )
            children = [Sample(id=Path(f).stem.lower(), path=folder / f) for f in files]
            sample = Sample(id=sample_id, path=Tortilla(samples=children))
            roi = folder.name if chosen != "synthetic" else folder.parent.name
            fields = {k: json_safe(v) for k, v in meta.get(roi, {}).items()}
            sample.extend_with({"roi_id": roi, **{k: fields.get(k) for k in _present(meta)}})
            samples.append(sample)
            bar.advance()
    name = str(record.get("name") or dataset.resolve().name)
    taco = Taco(
        tortilla=Tortilla(samples=samples),
        id=_taco_id(name),
        dataset_version=str(record.get("version") or "1.0.0"),
        description=(
            f"{record.get('recipe', 'harvest')} dataset ({chosen}) built by harvest; see the "
            "dataset card (README.md) of the source folder"
        ),
        licenses=["various"],
        providers=[Provider(name="harvest", roles=["processor"])],
        tasks=["super-resolution"],
    )
    output = Path(output)
    if output.suffix.lower() not in (".tacozip", ".zip"):
        raise ConfigError(f"-o {output}: a TACO file ends in .tacozip (or .zip)")
    tmp = temp_name(output).with_suffix(output.suffix)
    try:
        tacotoolbox.create(taco, tmp, output_format="zip", split_size=None)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return TacoExport(
        output, chosen, len(samples), tuple(Path(f).stem.lower() for f in layout or ())
    )


def _taco_id(name: str) -> str:
    """TACO ids are lower-case snake case: the dataset name made so."""
    out = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    return out or "harvest_dataset"


def _sample_folders(root: Path, product: str) -> list[tuple[str, Path]]:
    if product == "synthetic":
        return [
            (f"{d.parent.name}-{d.name}", d)
            for d in sorted(root.glob("*/*"))
            if d.is_dir() and not d.name.startswith(".")
        ]
    return [
        (d.name, d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
    ]


def _manifest_fields(dataset: Path) -> dict[str, dict[str, Any]]:
    path = dataset / "manifest.parquet"
    if not path.exists():
        return {}
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    cols = ["roi_id", *[c for c in SAMPLE_FIELDS if c in names]]
    return {r["roi_id"]: r for r in pq.read_table(path, columns=cols).to_pylist()}


def _present(meta: Mapping[str, Mapping[str, Any]]) -> list[str]:
    first = next(iter(meta.values()), {})
    return [c for c in SAMPLE_FIELDS if c in first]
