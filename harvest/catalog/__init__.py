"""Catalog search: scene metadata in one vocabulary, provider profiles, search backends."""

from harvest.catalog.base import (
    AssetMap,
    AssetRef,
    Catalog,
    Footprint,
    SceneRef,
    SearchRequest,
    SearchResult,
    SearchStats,
    dedupe_scenes,
)
from harvest.catalog.memory import MemoryCatalog, filter_scenes
from harvest.catalog.profiles import ProviderProfile, load_profile, parse_item

__all__ = [
    "AssetMap",
    "AssetRef",
    "Catalog",
    "Footprint",
    "MemoryCatalog",
    "ProviderProfile",
    "SceneRef",
    "SearchRequest",
    "SearchResult",
    "SearchStats",
    "dedupe_scenes",
    "filter_scenes",
    "load_profile",
    "parse_item",
]
