"""The ``veil`` command line (entry point: :func:`sandbox.cli.main.main`)."""
