"""Every network call has a timeout: a server that accepts connections and never answers."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest.backends.stac_api.planetary_computer import PlanetaryComputerSigner
from harvest.errors import ReadError

HARVEST = str(Path(sys.executable).parent / "harvest")
BLOB = "https://naipeuwest.blob.core.windows.net/naip/v002/x.tif"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel accepts connections (listen backlog) but nobody ever answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _roi_table(tmp_path: Path) -> Path:
    proc = subprocess.run(
        [HARVEST, "sample", "--n", "2", "--region", "conus", "-o", "rois.parquet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "rois.parquet"


def test_search_gives_up_on_a_silent_catalog_with_timeout(tmp_path: Path, silent_port: int) -> None:
    _roi_table(tmp_path)
    url = f"http://127.0.0.1:{silent_port}"
    started = time.monotonic()
    proc = subprocess.run(
        [HARVEST, "search", "rois.parquet", "--recipe", "sen2naip", "--catalog", url,
         "--timeout", "1", "-o", "pairs.parquet", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert url in lines[0] and "did not answer within 1 s (2 tries)" in lines[0]
    assert "--timeout" in lines[0]
    assert elapsed < 30  # two 1 s waits and start-up, not minutes
    assert not (tmp_path / "pairs.parquet").exists()


def test_timeout_must_be_positive(tmp_path: Path) -> None:
    _roi_table(tmp_path)
    proc = subprocess.run(
        [HARVEST, "search", "rois.parquet", "--recipe", "sen2naip", "--catalog",
         "http://127.0.0.1:9", "--timeout", "0", "-o", "p.parquet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--timeout" in proc.stderr


def test_token_endpoint_that_never_answers_is_a_one_line_read_error(
    silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from planetary_computer.settings import Settings

    sas_url = f"http://127.0.0.1:{silent_port}/api/sas/v1/token"
    monkeypatch.setenv("PC_SDK_SAS_URL", sas_url)
    Settings.get.cache_clear()
    try:
        started = time.monotonic()
        with pytest.raises(ReadError) as info:
            PlanetaryComputerSigner(timeout_s=0.5, retries=1)(BLOB)
        elapsed = time.monotonic() - started
    finally:
        monkeypatch.undo()
        Settings.get.cache_clear()
    msg = str(info.value)
    assert "\n" not in msg and f"{sas_url}/naipeuwest/naip" in msg and "timed out" in msg
    assert "PC_SDK_SAS_URL" in msg
    assert elapsed < 10


def test_token_endpoint_refusing_is_a_read_error_not_a_file_error(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from planetary_computer.settings import Settings

    sas_url = f"http://127.0.0.1:{closed_port}/api/sas/v1/token"
    monkeypatch.setenv("PC_SDK_SAS_URL", sas_url)
    Settings.get.cache_clear()
    try:
        with pytest.raises(ReadError, match="connection refused") as info:
            PlanetaryComputerSigner(timeout_s=0.5, retries=0)(BLOB)
    finally:
        monkeypatch.undo()
        Settings.get.cache_clear()
    assert "permissions and free space" not in str(info.value)


def test_non_blob_hrefs_are_not_signed_and_ask_nothing() -> None:
    sign = PlanetaryComputerSigner(timeout_s=0.1)
    assert sign("/data/local.tif") == "/data/local.tif"
    assert sign("https://example.com/x.tif") == "https://example.com/x.tif"


def test_cli_maps_network_oserrors_to_a_network_hint() -> None:
    import requests

    from harvest.cli import _is_network_error

    assert _is_network_error(requests.exceptions.ConnectionError("refused"))
    assert _is_network_error(ConnectionRefusedError(111, "Connection refused"))
    assert _is_network_error(TimeoutError("timed out"))
    assert not _is_network_error(FileNotFoundError(2, "No such file", "/x/y.parquet"))
    assert not _is_network_error(PermissionError(13, "Permission denied", "/x"))


def test_gdal_timeouts_follow_the_timeout_option() -> None:
    from harvest.backends.gdal.options import gdal_env_options, gdal_timeout_options

    assert gdal_timeout_options(None) == {}
    assert gdal_timeout_options(0.3) == {"GDAL_HTTP_TIMEOUT": 1, "GDAL_HTTP_CONNECTTIMEOUT": 1}
    assert gdal_timeout_options(45) == {"GDAL_HTTP_TIMEOUT": 45, "GDAL_HTTP_CONNECTTIMEOUT": 10}
    defaults = gdal_env_options()
    assert defaults["GDAL_HTTP_TIMEOUT"] <= 30 and defaults["GDAL_HTTP_CONNECTTIMEOUT"] <= 10
