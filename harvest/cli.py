"""The ``harvest`` command line.

Thin by design: parse options, build the request, call one public function, print the result.
This is the only module that reads environment variables and picks concrete backends. Heavy
modules are imported inside the commands so that ``harvest --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from degradation.errors import DegradationError
from harvest import __version__
from harvest.errors import HarvestError, Interrupted

log = logging.getLogger("harvest")

app = typer.Typer(
    name="harvest",
    help="Build Sentinel-2 super-resolution and multi-sensor fusion training datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
demo_app = typer.Typer(
    help="The embedded demo world: a seeded offline world with known ground truth.",
    no_args_is_help=True,
)
app.add_typer(demo_app, name="demo")

_state = {"verbose": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"harvest {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show details (debug log, tracebacks).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Build Sentinel-2 super-resolution and multi-sensor fusion training datasets."""
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Retries are ours to report (in the one-line error if they run out); without -v the
        # HTTP library's per-retry warnings are noise.
        logging.getLogger("urllib3").setLevel(logging.ERROR)


INTERRUPTED_MESSAGE = "interrupted: run the same command again to resume"


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while the CLI runs.

    Not ``KeyboardInterrupt``: Typer turns that into a bare exit status, and SIGTERM would
    otherwise kill the process without running the ``finally`` blocks that close a Dask
    cluster and remove temporary names.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _is_network_error(exc: OSError) -> bool:
    """Whether an OSError comes from a network call rather than a file the user named.

    requests and urllib3 errors are OSErrors too; without this a refused token endpoint got
    the hint about paths, permissions and free space.
    """
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return exc.filename is None
    module = type(exc).__module__.split(".")[0]
    return module in ("requests", "urllib3", "httplib2", "http", "google")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map errors to exit codes.

    Returns:
        0 on success, 1 for bad input (a :class:`HarvestError`), 2 for bad usage, 75 when
        another run holds the output folder (:class:`FolderLockedError`), 130 when
        interrupted by Ctrl-C (SIGINT), 143 by SIGTERM.
    """
    args = sys.argv[1:] if argv is None else argv
    _state["verbose"] = any(a in ("-v", "--verbose") for a in args)
    try:
        with _signals_interrupt():
            code = app(args=args, prog_name="harvest", standalone_mode=False)
        if isinstance(code, int) and code == 130:
            # A KeyboardInterrupt that Typer caught itself (outside the main thread's handler).
            typer.echo(INTERRUPTED_MESSAGE, err=True)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except Interrupted as exc:
        typer.echo(INTERRUPTED_MESSAGE, err=True)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        typer.echo(INTERRUPTED_MESSAGE, err=True)
        return 130
    except (HarvestError, DegradationError) as exc:
        if _state["verbose"]:
            log.exception("details")
        typer.echo(f"error: {exc}", err=True)
        # FolderLockedError has its own status (75: busy, try later); the others are 1.
        code = getattr(exc, "exit_code", 1)
        return code if isinstance(code, int) and not isinstance(code, bool) else 1
    except OSError as exc:
        if _is_network_error(exc):
            if _state["verbose"]:
                log.exception("details")
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            typer.echo(
                f"error: network error ({type(exc).__name__}: {reason}); check the network "
                "connection and the service's address, then run the same command again",
                err=True,
            )
            return 1
        # A path the user gave cannot be read or written (missing folder, permissions, full
        # disk): their input or machine, not a bug, so one line as for any bad input.
        if _state["verbose"]:
            log.exception("details")
        where = f" {exc.filename}" if exc.filename else ""
        reason = exc.strerror or str(exc)
        hint = "check the path, its permissions and free space"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "free space on the output folder's disk, then run the same command to resume"
        typer.echo(f"error: cannot access{where}: {reason}; {hint}", err=True)
        return 1
    except Exception as exc:
        # Typer vendors its own copy of click, so its usage errors are recognised by shape (an
        # exit code and a message formatter) rather than by a private class.
        code = getattr(exc, "exit_code", None)
        message = getattr(exc, "format_message", None)
        if not isinstance(code, int) or not callable(message):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            return code  # Typer has printed the help already.
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if code == 2 and ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        text = " ".join(str(message()).split())
        typer.echo(f"error: {text}{hint}", err=True)
        return code
    return 0


# --- commands ------------------------------------------------------------------------------
# Each command body stays short: the work lives in the library modules.


@app.command()
def sample(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of ROIs to draw.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output GeoParquet file.")],
    region: Annotated[
        str,
        typer.Option(
            help="'conus', 'world-land', or a GeoJSON / GeoPackage / GeoParquet polygon file."
        ),
    ] = "conus",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same ROIs.")] = 0,
    min_distance_km: Annotated[
        float,
        typer.Option(
            "--min-distance-km", min=0.001, help="Minimum geodesic distance between ROIs."
        ),
    ] = 5.0,
    exclude: Annotated[
        Path | None,
        typer.Option(help="Existing ROIs (GeoParquet) to keep the distance to; ids continue."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Draw ROIs with a hard-core point process (every pair >= --min-distance-km apart)."""
    from harvest.progress import Progress
    from harvest.stages import sample as stage

    summary = stage.run(
        n=n,
        output=output,
        region=region,
        seed=seed,
        min_distance_km=min_distance_km,
        exclude=exclude,
        progress=Progress(progress),
    )
    typer.echo(
        f"wrote {summary.n} ROIs ({summary.first_id}..{summary.last_id}) to {summary.output}"
    )


_Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0.1,
        help="Seconds to wait for one answer of a catalog or remote file (default: 20; a "
        "server that never answers fails after two such waits).",
    ),
]


@app.command()
def search(
    rois: Annotated[Path, typer.Argument(help="ROI table (GeoParquet from 'harvest sample').")],
    recipe: Annotated[str, typer.Option(help="Recipe: sen2naip, sen2venus, sen12 or a YAML path.")],
    catalog: Annotated[
        str,
        typer.Option(
            help="Provider (planetary-computer, earth-search, earth-engine, demo), a STAC API "
            "URL, a stac-geoparquet file or folder, or a demo world folder."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Pairs table to write.")],
    start: Annotated[
        str | None, typer.Option(help="First day YYYY-MM-DD (default: the recipe's).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Last day YYYY-MM-DD (default: recipe's, else today).")
    ] = None,
    all_candidates: Annotated[
        bool, typer.Option("--all-candidates", help="Keep every candidate pair with its rank.")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(help="Provider profile of a URL or local snapshot (vocabulary)."),
    ] = None,
    ee_project: Annotated[
        str | None,
        typer.Option(help="Earth Engine project (default: $EE_PROJECT, $GOOGLE_CLOUD_PROJECT)."),
    ] = None,
    timeout: _Timeout = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
) -> None:
    """Find (LR, HR) acquisition pairs for every ROI and write them as GeoParquet."""
    import os

    from harvest.backends.registry import DEMO_WORLD_ENV, default_ee_project, open_catalog
    from harvest.progress import Progress
    from harvest.stages import search as stage
    from harvest.stages.search import parse_day

    first = parse_day(start, "--start")
    last = parse_day(end, "--end")
    opened = open_catalog(
        catalog,
        profile=profile,
        ee_project=ee_project or default_ee_project(os.environ),
        demo_world=os.environ.get(DEMO_WORLD_ENV),
        timeout_s=timeout,
    )
    summary = stage.run(
        rois,
        recipe=recipe,
        catalog=opened.catalog,
        catalog_name=catalog,
        catalog_kind=opened.kind,
        output=output,
        start=first,
        end=last,
        all_candidates=all_candidates,
        progress=Progress(progress),
    )
    typer.echo(summary.line())


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help="Build config YAML (see configs/builds/).")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config value: KEY=VALUE, dotted keys for nested values "
            "(repeatable), e.g. --set output=/data/ds --set n=500.",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
) -> None:
    """Run the whole pipeline a config describes; resumes a folder it started."""
    import os

    from harvest.backends.registry import DEMO_WORLD_ENV, default_ee_project
    from harvest.progress import Progress
    from harvest.stages import build as stage

    summary = stage.run(
        config,
        overrides=set_ or (),
        progress=Progress(progress),
        demo_world_env=os.environ.get(DEMO_WORLD_ENV),
        ee_project_env=default_ee_project(os.environ),
    )
    for step in summary.steps:
        again = " (done before)" if step.reused else ""
        typer.echo(f"{step.stage:>14}: {step.result}{again} [{step.seconds:.1f} s]")
    typer.echo(
        f"dataset {summary.output} version {summary.version} (config {summary.config_hash}); "
        f"card {summary.output / 'README.md'}"
    )


@app.command()
def extend(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder written by 'harvest build'.")],
    n: Annotated[int, typer.Option("--n", min=0, help="New ROIs to sample (0: none).")] = 0,
    since: Annotated[
        str | None,
        typer.Option(
            help="First day YYYY-MM-DD searched for existing ROIs without a kept chip "
            "(default: the last day an earlier run searched)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one line of JSON on stdout (for schedulers).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
) -> int:
    """Add new ROIs and acquisitions to a built dataset, as a new version (the scheduled job).

    Exit status: 0 new version, 1 bad input, 3 nothing new, 4 busy (another build or extend
    holds the dataset), 75 temporary failure such as an unreachable catalog (retry later).
    """
    import json
    import os

    from harvest.backends.registry import DEMO_WORLD_ENV, default_ee_project
    from harvest.progress import Progress
    from harvest.stages import extend as stage
    from harvest.stages.search import parse_day

    try:
        summary = stage.run(
            dataset,
            n=n,
            since=parse_day(since, "--since"),
            progress=Progress(progress and not as_json),
            demo_world_env=os.environ.get(DEMO_WORLD_ENV),
            ee_project_env=default_ee_project(os.environ),
        )
    except (HarvestError, OSError) as exc:
        if as_json:
            code = getattr(exc, "exit_code", 1)
            code = code if isinstance(code, int) and not isinstance(code, bool) else 1
            line = {"status": "error", "dataset": str(dataset), "exit_code": code}
            typer.echo(json.dumps({**line, "error": " ".join(str(exc).split())}))
        raise
    code = stage.EXIT_DONE if summary.status == "extended" else stage.EXIT_NOTHING_NEW
    if as_json:
        typer.echo(json.dumps({**summary.to_json(), "exit_code": code}))
        return code
    for step in summary.steps:
        typer.echo(f"{step.stage:>14}: {step.result} [{step.seconds:.1f} s]")
    if summary.status == "extended":
        typer.echo(
            f"{dataset}: version {summary.previous_version} -> {summary.version}: "
            f"{len(summary.new_rois)} new ROIs, {len(summary.new_kept)} new kept chips, "
            f"{summary.new_selected} newly selected; see {Path(dataset) / 'CHANGELOG.md'}"
        )
    else:
        typer.echo(
            f"{dataset}: nothing new since {summary.since} ({len(summary.new_rois)} new ROIs, "
            f"{summary.new_pairs} new pairs, none kept); version {summary.version} unchanged"
        )
    return code


@app.command()
def export(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (from build, fetch, degrade).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (.tacozip).")],
    format: Annotated[str, typer.Option("--format", help="Container format: taco.")] = "taco",
    product: Annotated[
        str | None,
        typer.Option(help="Which samples: cross-sensor, kept or synthetic (default: the first)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Write a dataset as a TACO file (needs the taco extra: pip install 'harvest-eo[taco]')."""
    from harvest.progress import Progress
    from harvest.stages import export as stage

    done = stage.run(dataset, output, format=format, product=product, progress=Progress(progress))
    typer.echo(
        f"{done.n_samples} {done.product} samples ({', '.join(done.files_per_sample)} each) "
        f"-> {done.path}"
    )


@demo_app.command("world")
def demo_world(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the demo world into.")],
    seed: Annotated[int, typer.Option(help="Seed of the simulator.")] = 0,
    force: Annotated[bool, typer.Option(help="Rebuild even if the folder holds a world.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    site_size_m: Annotated[
        float, typer.Option(hidden=True, help="Side of each site in metres (tests).")
    ] = 2400.0,
    sites: Annotated[
        int | None,
        typer.Option(
            help="Number of sites: the first N standard sites, or all 7 plus seeded CONUS "
            "sites with a NAIP / Sentinel-2 pair each (default: the standard 7).",
            min=1,
        ),
    ] = None,
) -> None:
    """Write the seeded demo world (COGs, STAC catalog, stac-geoparquet, truth.json)."""
    from harvest.progress import Progress
    from harvest.stages import demo_world as stage

    summary = stage.run(
        out_dir,
        seed=seed,
        force=force,
        site_size_m=site_size_m,
        n_sites=sites,
        progress=Progress(progress),
    )
    items = ", ".join(f"{n} {c}" for c, n in summary.n_items.items())
    state = "already built, reused" if summary.reused else f"built in {summary.seconds:.1f} s"
    typer.echo(
        f"demo world (seed {summary.seed}) {state}: {summary.out_dir} "
        f"({summary.n_sites} sites; {items}; {summary.bytes_on_disk / 1e6:.0f} MB)"
    )


@demo_app.command("run")
def demo_run(
    out_dir: Annotated[Path, typer.Argument(help="Folder for every output of the demo.")],
    seed: Annotated[int, typer.Option(help="Seed of the world and the samplers.")] = 0,
    world: Annotated[
        Path | None,
        typer.Option(help="Demo world folder to use or build (default: OUT_DIR/world)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars on stderr.")] = True,
) -> None:
    """Run every stage that exists on the demo world and print a summary (what `make demo` runs)."""
    from rich.console import Console
    from rich.table import Table

    from harvest.progress import Progress
    from harvest.stages import demo_run as stage

    summary = stage.run(out_dir, seed=seed, world=world, progress=Progress(progress))
    table = Table(title=f"harvest {__version__}: demo run in {summary.out_dir}")
    for column in ("stage", "output", "result", "time"):
        table.add_column(column, overflow="fold")
    for st in summary.stages:
        table.add_row(st.stage, str(st.output), st.result, f"{st.seconds:.1f} s")
    Console(width=max(160, Console().width)).print(table)


_QaShift = Annotated[
    float, typer.Option("--max-shift-px", min=0, help="Reject chips whose QA_1 shift exceeds this.")
]
_QaSam = Annotated[
    float, typer.Option("--max-sam-deg", min=0, help="Reject chips whose QA_2 angle exceeds this.")
]
_QaCloud = Annotated[
    float,
    typer.Option("--max-cloud-pct", min=0, max=100, help="Largest cloud + shadow share (%)."),
]
_QaNodata = Annotated[
    float, typer.Option("--max-nodata-pct", min=0, max=100, help="Largest nodata share (%).")
]
_QaMethod = Annotated[str, typer.Option("--shift-method", help="Shift estimator: phase or sift.")]


@app.command()
def fetch(
    pairs: Annotated[Path, typer.Argument(help="Pairs table (from 'harvest search').")],
    recipe: Annotated[str, typer.Option(help="Recipe: sen2naip, sen2venus, sen12 or a YAML path.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset folder to write.")],
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes of a local Dask cluster (1: no Dask).")
    ] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="Address of an existing Dask scheduler (tcp://host:8786).")
    ] = None,
    correct_shift: Annotated[
        bool, typer.Option("--correct-shift", help="Move kept LR chips by the estimated shift.")
    ] = False,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    max_shift_px: _QaShift = 1.0,
    max_sam_deg: _QaSam = 2.0,
    max_cloud_pct: _QaCloud = 0.0,
    max_nodata_pct: _QaNodata = 0.0,
    shift_method: _QaMethod = "phase",
    ee_project: Annotated[
        str | None,
        typer.Option(
            help="Earth Engine project for ee:// reads (default: $EE_PROJECT, "
            "$GOOGLE_CLOUD_PROJECT)."
        ),
    ] = None,
    ee_url: Annotated[
        str | None,
        typer.Option(
            help="Earth Engine endpoint for ee:// reads, e.g. "
            "https://earthengine-highvolume.googleapis.com (default: the standard one)."
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Read hrefs of a remote catalog on this HOST or HOST:PORT even though it is "
            "loopback, private or link-local (repeatable; also $HARVEST_ALLOW_HOSTS, comma "
            "separated).",
        ),
    ] = None,
    timeout: _Timeout = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Read, quality-check and write LR/HR chips (SEN2NAIP layout); resumes an existing folder."""
    import os

    from harvest.backends.registry import default_ee_project, signer_for
    from harvest.hrefs import ALLOW_HOSTS_ENV, parse_allowed_hosts
    from harvest.progress import Progress
    from harvest.qa import thresholds_from_options
    from harvest.recipes import load_recipe
    from harvest.stages import fetch as stage
    from harvest.tables import read_pairs

    allowed = parse_allowed_hosts([*(allow_host or []), os.environ.get(ALLOW_HOSTS_ENV, "")])
    rec = load_recipe(recipe)
    table = read_pairs(pairs)
    summary = stage.run(
        table,
        rec,
        output,
        workers=workers,
        scheduler=scheduler,
        thresholds=thresholds_from_options(
            max_shift_px, max_sam_deg, max_cloud_pct, max_nodata_pct, shift_method
        ),
        correct_shift=correct_shift,
        progress=Progress(progress),
        sign=signer_for(table.metadata.provider, timeout),
        split_seed=split_seed,
        ee_project=ee_project or default_ee_project(os.environ),
        ee_url=ee_url,
        allow_hosts=allowed,
        timeout_s=timeout,
    )
    fetched = summary.n_total > summary.n_done_before
    rate = f"{summary.chips_per_s:.1f} chips/s" if fetched else "nothing left to fetch"
    typer.echo(
        f"{summary.n_kept} kept, {summary.n_rejected} rejected, {summary.n_failed} failed "
        f"({summary.n_done_before} done before; {rate}); manifest {summary.manifest}"
    )
    for line in summary.failure_lines():  # once per error kind, not once per chip
        typer.echo(line, err=True)


@app.command()
def qa(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder written by 'harvest fetch'.")],
    max_shift_px: _QaShift = 1.0,
    max_sam_deg: _QaSam = 2.0,
    max_cloud_pct: _QaCloud = 0.0,
    max_nodata_pct: _QaNodata = 0.0,
    shift_method: _QaMethod = "phase",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Re-run chip QA with other thresholds, without fetching again; rewrites the manifest."""
    from harvest.progress import Progress
    from harvest.qa import thresholds_from_options
    from harvest.stages import qa as stage

    summary = stage.run(
        dataset,
        thresholds_from_options(
            max_shift_px, max_sam_deg, max_cloud_pct, max_nodata_pct, shift_method
        ),
        progress=Progress(progress),
    )
    typer.echo(
        f"{summary.n_kept} kept, {summary.n_rejected} rejected, {summary.n_failed} failed; "
        f"manifest {summary.manifest}"
    )
    for line in summary.failure_lines():
        typer.echo(line, err=True)


degradation_app = typer.Typer(
    help="Fit degradation models (PSF, gamma, noise, U-Net, VAE) on LR/HR pairs.",
    no_args_is_help=True,
)
app.add_typer(degradation_app, name="degradation")


@degradation_app.command("fit")
def degradation_fit(
    pairs_dir: Annotated[Path, typer.Argument(help="Dataset folder written by 'harvest fetch'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")],
    train: Annotated[
        str, typer.Option(help="Networks to train on CPU, comma separated: unet, vae.")
    ] = "",
    split: Annotated[str, typer.Option(help="Chips to fit on: train, test or all.")] = "train",
    seed: Annotated[int, typer.Option(help="Seed of the training and evaluation.")] = 0,
    shift: Annotated[
        str, typer.Option(help="Misregistration: scene (median per S2 scene), chip or none.")
    ] = "scene",
    iterations: Annotated[int, typer.Option(min=1, help="Gamma/sigma alternation rounds.")] = 2,
    unet_epochs: Annotated[int, typer.Option(min=1, help="U-Net training epochs.")] = 30,
    vae_epochs: Annotated[int, typer.Option(min=1, help="VAE training epochs.")] = 200,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Fit sigma, gamma statistics, the noise matrix (and networks) on LR/HR pairs."""
    from harvest.progress import Progress
    from harvest.stages import fit as stage

    summary = stage.run(
        pairs_dir,
        output,
        train=stage.parse_list(train, stage.TRAINABLE, "network"),
        split=split,
        seed=seed,
        shift=shift,
        iterations=iterations,
        unet_epochs=unet_epochs,
        vae_epochs=vae_epochs,
        progress=Progress(progress),
    )
    typer.echo(summary.line())


@app.command()
def degrade(
    hr_dir: Annotated[Path, typer.Argument(help="Folder of HR GeoTIFFs (or a cross-sensor set).")],
    model: Annotated[str, typer.Option(help="'sen2naip' or a folder from 'degradation fit'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset folder to write.")],
    methods: Annotated[
        str,
        typer.Option(help="Comma separated: statistical, deterministic, variational, raw."),
    ] = "statistical,deterministic,variational",
    seed: Annotated[int, typer.Option(help="Seed of gammas, latents and noise.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Write HR_h, S2-like LR and histograms per HR image (SEN2NAIP synthetic layout)."""
    from harvest.progress import Progress
    from harvest.stages import degrade as stage

    summary = stage.run(
        hr_dir,
        model,
        output,
        methods=stage.parse_list(methods, stage.DEGRADE_METHODS, "method"),
        seed=seed,
        progress=Progress(progress),
    )
    typer.echo(summary.line())


# --- embed and prune ---------------------------------------------------------------------------


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Prediction: a GeoTIFF or a Zarr store.")],
    ref: Annotated[Path, typer.Argument(help="Reference on the same grid (same kind as PRED).")],
    mask: Annotated[
        Path | None, typer.Option(help="Pixels to score (non-zero), on the same grid.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="JSON report to write.")
    ] = None,
    red: Annotated[
        int | None, typer.Option(min=1, help="1-based red band for NDVI (default: by name).")
    ] = None,
    nir: Annotated[
        int | None, typer.Option(min=1, help="1-based NIR band for NDVI (default: by name).")
    ] = None,
    data_range: Annotated[float, typer.Option(help="PSNR peak value of the bands.")] = 1.0,
    ratio: Annotated[
        float, typer.Option(help="ERGAS ratio: HR pixel size / LR pixel size (0.25 for x4).")
    ] = 0.25,
    variable: Annotated[
        str | None, typer.Option(help="Zarr variable to read, when a store holds several.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Score PRED against REF: RMSE, MAE, PSNR, UIQI, CE90/99, SAM, edges, ERGAS; 3 strata."""
    from harvest.progress import Progress
    from harvest.stages import evaluate as stage

    summary = stage.run(
        pred,
        ref,
        mask=mask,
        output=output,
        red=red,
        nir=nir,
        data_range=data_range,
        ratio=ratio,
        variable=variable,
        progress=Progress(progress),
    )
    typer.echo(stage.format_table(summary.report))
    typer.echo(summary.line())


_Model = Annotated[
    str | None,
    typer.Option(
        help="open_clip architecture (default ViT-B-32), a model-config JSON file, or "
        "hf-hub:ORG/REPO."
    ),
]
_Pretrained = Annotated[
    str | None,
    typer.Option(
        help="open_clip pretrained tag, read from the local Hugging Face cache "
        "(default laion2b_s34b_b79k)."
    ),
]
_Checkpoint = Annotated[
    Path | None,
    typer.Option(help="Local state dict for --model (RemoteCLIP, GeoRSCLIP...)."),
]
_Image = Annotated[str, typer.Option("--image", help="Which image of each chip: hr or lr.")]
_Subset = Annotated[
    str | None,
    typer.Option(help="Only the images of one layout folder: cross-sensor, kept or synthetic."),
]
_EmbedWorkers = Annotated[
    int, typer.Option(min=1, help="Embed on a local Dask cluster of N processes (1: no Dask).")
]
_EmbedScheduler = Annotated[
    str | None, typer.Option(help="Embed on the Dask scheduler at this address (tcp://host:8786).")
]
_Device = Annotated[str, typer.Option(help="cpu or cuda.")]
_Precision = Annotated[
    str,
    typer.Option(help="auto (fastest path that matches fp32), fp32, bf16, int8, ..."),
]
_BatchSize = Annotated[int, typer.Option(min=1, help="Images per forward pass.")]
_Download = Annotated[
    bool,
    typer.Option(
        help="Allow downloading missing weights from the Hugging Face Hub (never when "
        "HF_HUB_OFFLINE is set)."
    ),
]


def _weights_spec(
    model: str | None, pretrained: str | None, checkpoint: Path | None, download: bool
) -> object | None:
    """The weights spec of the options (None when none is given: the recorded one is used)."""
    if pretrained is not None and checkpoint is not None:
        raise typer.BadParameter(
            "give --pretrained TAG or --checkpoint PATH, not both", param_hint="--checkpoint"
        )
    if model is None and pretrained is None and checkpoint is None:
        return None
    import os

    from harvest.embed import DEFAULT_MODEL, DEFAULT_PRETRAINED, WeightsSpec

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")
    return WeightsSpec(
        model=model or DEFAULT_MODEL,
        pretrained=None if checkpoint is not None else (pretrained or DEFAULT_PRETRAINED),
        checkpoint=checkpoint,
        allow_download=download and not offline,
    )


@app.command()
def embed(
    dataset: Annotated[
        Path, typer.Argument(help="Folder written by fetch or degrade, or of GeoTIFFs.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Embeddings GeoParquet.")],
    model: _Model = None,
    pretrained: _Pretrained = None,
    checkpoint: _Checkpoint = None,
    image: _Image = "hr",
    subset: _Subset = None,
    workers: _EmbedWorkers = 1,
    scheduler: _EmbedScheduler = None,
    device: _Device = "cpu",
    precision: _Precision = "auto",
    batch_size: _BatchSize = 32,
    download: _Download = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """CLIP image embeddings of a dataset's images (resumable: done images are skipped)."""
    from harvest.progress import Progress
    from harvest.stages import embed as stage

    summary = stage.run(
        dataset,
        output,
        weights=_weights_spec(model, pretrained, checkpoint, download),  # type: ignore[arg-type]
        image_role=image,
        subset=subset,
        workers=workers,
        scheduler=scheduler,
        device=device,
        precision=precision,
        batch_size=batch_size,
        progress=Progress(progress),
    )
    if summary.result.path_note:
        typer.echo(summary.result.path_note, err=True)
    typer.echo(summary.line())


@app.command()
def prune(
    dataset: Annotated[
        Path, typer.Argument(help="Folder written by fetch or degrade, or of GeoTIFFs.")
    ],
    clusters: Annotated[int, typer.Option(help="Number of clusters (SEN2NAIP: 18000).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Selection GeoParquet.")],
    seed: Annotated[int, typer.Option(help="Seed of the k-means and of the choice.")] = 0,
    strategy: Annotated[
        str, typer.Option(help="random (the paper) or nearest (closest to the centroid).")
    ] = "random",
    kmeans: Annotated[
        str,
        typer.Option(
            help="k-means: lloyd (full batch, default), minibatch (scikit-learn "
            "MiniBatchKMeans, as the paper) or faiss (needs faiss-cpu)."
        ),
    ] = "lloyd",
    grow: Annotated[int, typer.Option(min=0, help="Add K clusters fitted on the new images.")] = 0,
    embeddings: Annotated[
        Path | None,
        typer.Option(help="Embeddings table (default: embeddings.parquet beside -o)."),
    ] = None,
    model: _Model = None,
    pretrained: _Pretrained = None,
    checkpoint: _Checkpoint = None,
    image: _Image = "hr",
    subset: _Subset = None,
    workers: _EmbedWorkers = 1,
    scheduler: _EmbedScheduler = None,
    device: _Device = "cpu",
    precision: _Precision = "auto",
    batch_size: _BatchSize = 32,
    download: _Download = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Keep one image per CLIP cluster (embeds first what is not embedded); incremental."""
    from harvest.progress import Progress
    from harvest.stages import prune as stage

    summary = stage.run(
        dataset,
        output,
        clusters=clusters,
        seed=seed,
        strategy=strategy,
        kmeans=kmeans,
        weights=_weights_spec(model, pretrained, checkpoint, download),  # type: ignore[arg-type]
        embeddings_path=embeddings,
        grow=grow,
        image_role=image,
        subset=subset,
        workers=workers,
        scheduler=scheduler,
        device=device,
        precision=precision,
        batch_size=batch_size,
        progress=Progress(progress),
    )
    if summary.path_note:
        typer.echo(summary.path_note, err=True)
    typer.echo(summary.line())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
