"""File sources: CSV, Parquet, JSON lines and Arrow IPC; one file, a directory, or a glob of many.

:mod:`~connectors.files.connector` is the connector; :mod:`~connectors.files.storage` lists and
opens the files; one module per format reads them (:mod:`~connectors.files.csv` with
:mod:`~connectors.files.csv_options`, :mod:`~connectors.files.parquet`,
:mod:`~connectors.files.jsonl`, :mod:`~connectors.files.ipc`), sharing
:mod:`~connectors.files.common`.
"""
