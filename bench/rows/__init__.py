"""The benchmark's rows, one module each; adding a row is one module here and one line in ``ROWS``.

A row module defines ``NUMBERS`` (the table's row numbers it fills), ``TITLE`` and
``measure(bench) -> list[Row]``: one run, edgeloop's figure next to the reference's,
measured in the same run on the same records. The runner repeats it (3 times, once with
``--quick``) and folds the runs into medians with min–max. Optionally ``summarize(details,
out_dir, machine) -> dict`` turns every run's ``bench.details`` into an extra table
(``"text"``) and files (the scaling plot).
"""

from __future__ import annotations

from bench.rows import device, export, ingest, intake, jetstream, lake, privacy, scaling, wire

# Run in this order (the table sorts by number): the rows whose targets the code is tuned against
# first, so a run stopped on a busy machine has measured those.
ROWS = (ingest, wire, scaling, device, jetstream, privacy, intake, export, lake)
