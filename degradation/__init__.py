"""Degradation models that turn high-resolution imagery into Sentinel-2-like imagery."""
