"""Sources to Arrow to workspace: one module per source kind behind one small protocol.

:mod:`~connectors.source` parses a source string into a spec; :func:`connectors.connect.connect`
gives the :class:`~connectors.base.Connector` that serves it (:mod:`~connectors.files`,
:mod:`~connectors.s3`, :mod:`~connectors.postgres`), whose batches :mod:`~connectors.convert`
converts to the policy's declared types; :func:`connectors.load.ingest` loads a dataset version
through :mod:`~connectors.sink` into a workspace, with its :mod:`~connectors.quality` report.
Errors are :mod:`~connectors.errors`.
"""
