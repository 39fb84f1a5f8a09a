"""Earth Engine backend (earthengine-api).

:mod:`.session` initialises the library and names the project limits (the only module that
imports ``ee``), :mod:`.assets` writes and parses ``ee://`` hrefs, :mod:`.search` is the catalog
and :mod:`.reader` the computePixels chip reader.
"""
