"""The values the commands' options accept, apart from the modules that act on them.

``edgeloop-ingest`` builds its whole parser (every command's ``choices``) before it runs one
command; kept here, they do not load the report, fleet and label modules, and Arrow with them,
into a ``sql`` or an ``export``. Each is used from its own module too (the dashboard checks
``STATES``, ``GROUPINGS`` and ``PERIODS`` against the same tuples).
"""

from __future__ import annotations

__all__ = ["GROUPINGS", "IMPORT_FORMATS", "ORDERS", "PERIODS", "QUEUE_FORMATS", "REPORT_FORMATS", "STATES"]

STATES = ("ok", "late", "failing", "silent", "never_seen", "revoked")  # a device's state in the fleet (fleet.py)
GROUPINGS = ("model_version", "device", "none")  # one report row per (report.py)
PERIODS = ("auto", "day", "week", "month")  # a report's period over time (report.py)
REPORT_FORMATS = ("table", "json", "html")  # report_view.py
QUEUE_FORMATS = ("label-studio", "jsonl", "csv")  # the label queue's task files (label_queue.py)
ORDERS = ("oldest", "uncertainty")  # label_queue.py
IMPORT_FORMATS = ("label-studio", "jsonl", "csv")  # the label files feedback import reads (label_import.py)
