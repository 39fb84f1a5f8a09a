"""One module per user command: the code of ``harvest X`` is in ``harvest/stages/X.py``.

Each stage module has one public ``run(...)`` that takes typed arguments and a
:class:`~harvest.progress.Progress`, does the work, and returns a frozen summary; ``cli.py`` maps
one command to one ``run``, and ``pipeline.py`` only chains stages. Stages never import a backend
module: catalogs and readers come from the registry.
"""
