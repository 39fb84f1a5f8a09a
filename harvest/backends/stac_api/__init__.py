"""STAC API backend (pystac-client).

:mod:`.transport` is the one HTTP transport (its retry policy, timeouts and one-line errors),
:mod:`.http` its requests-only pieces, :mod:`.catalog` the batched search and
:mod:`.planetary_computer` the href signer. Its hrefs are read by the GDAL reader
(:mod:`harvest.backends.gdal`).
"""
