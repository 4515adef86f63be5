"""Helpers shared by the test packages: plain functions, classes and constants, no fixtures
(those are in ``tests/conftest.py``) and no tests. A test module imports from here, never from
another test module or a conftest."""
