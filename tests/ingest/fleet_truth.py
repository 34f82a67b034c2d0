"""The fleet aggregates against SQL over what landed: each pair is (what the aggregates say, what the tables say).

Both sides of a pair run through the same SQL interface (``/v1/sql``, the CLI or a lake
connection), so a test on either backend asks ``sql`` for both and compares them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["PAIRS", "assert_aggregates_match", "assert_aggregates_match_async"]

_ROWS = ("SELECT device, model_version, received_at::DATE AS day, 1 AS p, 0 AS f FROM vibration "
         "UNION ALL SELECT device, model_version, received_at::DATE, 0, 1 FROM vibration_feedback")

PAIRS: dict[str, tuple[str, str]] = {
    "landed_daily": (
        "SELECT day, model_version, device, sum(predictions)::BIGINT AS predictions, sum(feedback)::BIGINT AS feedback "
        "FROM landed_daily WHERE model = 'vibration' GROUP BY ALL ORDER BY ALL",
        f"SELECT day, model_version, device, sum(p)::BIGINT AS predictions, sum(f)::BIGINT AS feedback FROM ({_ROWS}) "
        "GROUP BY ALL ORDER BY ALL",
    ),
    "rows_per_device": (
        "SELECT device, rows FROM device_health WHERE rows <> 0 ORDER BY device",
        f"SELECT device, count(*) AS rows FROM ({_ROWS}) GROUP BY device ORDER BY device",
    ),
    "batches_per_device": (
        "SELECT device, batches FROM device_health WHERE batches <> 0 ORDER BY device",
        "SELECT device, count(*) AS batches FROM batches GROUP BY device ORDER BY device",
    ),
    "statuses": (
        "SELECT device, statuses, last_status_id, dropped FROM device_health WHERE statuses <> 0 ORDER BY device",
        "SELECT device, count(*) AS statuses, arg_max(status_id, sent_at) AS last_status_id, sum(dropped)::BIGINT AS dropped "
        "FROM device_status GROUP BY device ORDER BY device",
    ),
    "versions": (
        "SELECT device, model_version FROM device_versions WHERE model = 'vibration' ORDER BY device",
        "SELECT device, arg_max(model_version, created_at) AS model_version FROM vibration GROUP BY device ORDER BY device",
    ),
    "coverage": (
        "SELECT model_version, predictions, round(weighted, 6) AS weighted, labelled, round(weighted_labelled, 6) AS wl "
        "FROM label_coverage WHERE model = 'vibration' ORDER BY 1",
        "SELECT model_version, count(*) AS predictions, round(sum(sample_weight), 6) AS weighted, count(true_class) AS labelled, "
        "round(coalesce(sum(CASE WHEN true_class IS NULL THEN 0 ELSE sample_weight END), 0), 6) AS wl "
        "FROM vibration_training GROUP BY 1 ORDER BY 1",
    ),
}


def assert_aggregates_match(sql: Callable[[str], list[dict[str, Any]]], pairs: dict[str, tuple[str, str]] = PAIRS) -> None:
    """Every aggregate equals its count over the landed tables."""
    for name, (kept_sql, truth_sql) in pairs.items():
        kept, truth = sql(kept_sql), sql(truth_sql)
        assert kept == truth, f"{name}: the aggregates say {kept}, the tables {truth}"


async def assert_aggregates_match_async(sql: Callable[[str], Awaitable[list[dict[str, Any]]]],
                                        pairs: dict[str, tuple[str, str]] = PAIRS) -> None:
    """``assert_aggregates_match`` through an async ``sql`` (a test's ``server.sql``)."""
    for name, (kept_sql, truth_sql) in pairs.items():
        kept, truth = await sql(kept_sql), await sql(truth_sql)
        assert kept == truth, f"{name}: the aggregates say {kept}, the tables {truth}"
