"""``ee://COLLECTION/INDEX#BAND`` asset hrefs: the Earth Engine image id and band name.

The catalog writes them (:func:`ee_href`), the reader parses them (:func:`split_ee_href`) and the
registry sends every href with :data:`EE_HREF_SCHEME` to the Earth Engine reader.
"""

from __future__ import annotations

from harvest.backends.base import AssetRef
from harvest.errors import CatalogError

EE_HREF_SCHEME = "ee://"
CLOUD_SCORE_ASSET = "cloud_score"
"""Asset key of the linked Cloud Score+ image (per-pixel clear-sky score) where it exists."""


def ee_href(collection_id: str, image_index: str, band: str) -> str:
    """``ee://COLLECTION/INDEX#BAND`` for one band of one image."""
    return f"{EE_HREF_SCHEME}{collection_id}/{image_index}#{band}"


def split_ee_href(href: str) -> tuple[str, str]:
    """``ee://COLLECTION/INDEX#BAND`` -> (Earth Engine image id, band name).

    Raises:
        CatalogError: the href is not an Earth Engine href.
    """
    if not href.startswith(EE_HREF_SCHEME) or "#" not in href:
        raise CatalogError(f"{href!r} is not an Earth Engine href (ee://COLLECTION/INDEX#BAND)")
    image_id, band = href[len(EE_HREF_SCHEME) :].rsplit("#", 1)
    if not image_id or not band:
        raise CatalogError(f"{href!r} lacks the image id or the band name")
    return image_id, band


def is_earth_engine_asset(ref: AssetRef) -> bool:
    """Whether an asset is read through Earth Engine (an ``ee://`` href)."""
    return ref.href.startswith(EE_HREF_SCHEME)
