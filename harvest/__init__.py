"""harvest: training datasets for Sentinel-2 super-resolution from cloud catalogs."""

__version__ = "0.1.0"
