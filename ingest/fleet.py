"""The fleet view: per model, which versions run on how many devices, under which sampling policies, and when last seen."""

from __future__ import annotations

import pyarrow as pa

from edgeloop.ingest.admin import Admin
from edgeloop.ingest.store import quote

__all__ = ["DEVICES_SQL", "fleet"]

DEVICES_SQL = """
SELECT d.name,
       CASE WHEN d.revoked_at IS NULL THEN 'active' ELSE 'revoked' END AS status,
       d.created_at, d.revoked_at, max(b.received_at) AS last_seen,
       count(b.batch_id) AS batches, coalesce(sum(b.rows), 0)::BIGINT AS rows
FROM devices AS d LEFT JOIN batches AS b ON b.device = d.name
GROUP BY d.name, d.created_at, d.revoked_at
ORDER BY d.name
"""

EMPTY = pa.schema([
    ("model", pa.string()), ("model_version", pa.string()), ("devices", pa.int64()), ("predictions", pa.int64()),
    ("first_seen", pa.timestamp("us", tz="UTC")), ("last_seen", pa.timestamp("us", tz="UTC")), ("policies", pa.string()),
])


def fleet(admin: Admin) -> pa.Table:
    """Versions per model with device counts, first/last receive time and the policy versions that kept the rows."""
    models = admin.query("SELECT model FROM models ORDER BY model").column("model").to_pylist()
    if not models:
        return EMPTY.empty_table()
    parts = [
        f"SELECT ? AS model, model_version, count(DISTINCT device) AS devices, count(*) AS predictions, "
        f"min(received_at) AS first_seen, max(received_at) AS last_seen, "
        f"string_agg(DISTINCT policy_version, ', ' ORDER BY policy_version) AS policies FROM {quote(model)} GROUP BY model_version"
        for model in models
    ]
    sql = " UNION ALL ".join(parts) + " ORDER BY model, last_seen DESC"
    return admin.query(sql, models)
