"""edgeloop's benchmarks: one module per row under ``bench/rows/``, run by ``./scripts/bench``.

Not part of what a device or a server installs: it runs from the repository, next to the
simulated models (``bench/simulator.py``) that the demo and the tests also use.
"""
