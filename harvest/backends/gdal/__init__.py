"""The GDAL reader, for every href that is not ``ee://``.

Local files, http(s) URLs and ``/vsi*`` paths, as the STAC API and stac-geoparquet backends give
them. :mod:`.options` holds the GDAL settings, :mod:`.retry` the backoff of transient read
errors, :mod:`.area_average` the exact area-average maths (pure numpy) and :mod:`.reader` the
:class:`~harvest.backends.gdal.reader.RasterioReader`.
"""
