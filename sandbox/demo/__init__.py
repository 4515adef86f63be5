"""The demo zone: its data files, the synthetic enterprise records, and the build."""
