"""Catalog and reader backends, one package per provider family.

Each family offers a catalog and a reader behind the protocols of :mod:`harvest.backends.base`;
:mod:`harvest.backends.registry` chooses them (catalog by ``--catalog`` spec, reader by href
scheme). Stages import only ``base`` and ``registry``; nothing is imported here, so that asking
the registry does not load pystac-client, DuckDB, rasterio or earthengine-api.
"""
