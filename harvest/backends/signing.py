"""Href signing shared by the catalogs whose scenes keep unsigned hrefs (STAC API, parquet).

Planetary Computer's tokens expire after about 45 minutes, so tables keep unsigned hrefs and a
:data:`~harvest.backends.base.Signer` is applied right before pixels are read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from harvest.backends.base import AssetRef, SceneRef, Signer

if TYPE_CHECKING:
    from harvest.backends.profiles import ProviderProfile


def sign_asset(asset: AssetRef, sign: Signer | None) -> AssetRef:
    """A copy of ``asset`` whose href is signed (unchanged when ``sign`` is None)."""
    if sign is None:
        return asset
    return replace(asset, href=sign(asset.href))


def signed_assets(scene: SceneRef, sign: Signer | None) -> dict[str, AssetRef]:
    """The scene's assets with signed hrefs, for the read stage; the scene is not modified."""
    return {band: sign_asset(ref, sign) for band, ref in scene.assets.items()}


class HrefSigning:
    """Signing for catalogs whose scenes keep unsigned hrefs (mixed into the STAC backends).

    Subclasses set ``profile`` (a :class:`ProviderProfile`) and ``_sign`` (a signer or None).
    """

    profile: ProviderProfile
    _sign: Signer | None

    @property
    def provider(self) -> str:
        """Name of the provider profile whose vocabulary the scenes use."""
        return self.profile.name

    def sign_href(self, href: str) -> str:
        """Sign one href right before reading it (identity without a signer)."""
        return href if self._sign is None else self._sign(href)

    def signed_assets(self, scene: SceneRef) -> dict[str, AssetRef]:
        """The scene's assets with signed hrefs (the scene keeps its unsigned ones)."""
        return signed_assets(scene, self._sign)
