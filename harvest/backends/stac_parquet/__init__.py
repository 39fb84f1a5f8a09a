"""stac-geoparquet backend (DuckDB).

:mod:`.catalog` answers many footprints with one SQL query. Its hrefs are read by the GDAL
reader (:mod:`harvest.backends.gdal`).
"""
