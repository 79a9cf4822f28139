"""Real services the tests start on this host (an S3 server, a two-node SLURM); `conftest.py` wraps them in
fixtures. Imported as `infra.<module>` (pytest puts `tests/` on the path)."""
