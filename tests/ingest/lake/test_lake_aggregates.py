"""The DuckLake store passes the DuckDB store's fleet, health, tally and deletion tests (the ``server`` fixture is a lake here).

On a lake the aggregates are delta rows merged by views (ingest/aggregate.py); these are the
same assertions, over the same HTTP and SQL interfaces, as on a DuckDB file.
"""

from tests.ingest.test_dashboard import test_rollout_and_data_match_sql  # noqa: F401
from tests.ingest.test_deletion import (  # noqa: F401
    test_after_a_deletion_and_retention_the_fleet_counts_leave_out_the_deleted_rows,
)
from tests.ingest.test_health import (  # noqa: F401
    test_a_retried_status_is_idempotent_and_a_reused_id_with_other_content_conflicts,
    test_a_status_is_stored_as_history_and_the_device_is_alive,
    test_an_older_report_arriving_late_never_replaces_the_latest,
    test_landing_keeps_the_version_aggregates_without_scanning_model_tables,
    test_refused_uploads_are_counted_per_device_and_code,
    test_the_writer_prunes_status_history_past_retention_but_keeps_each_device_latest,
)
from tests.ingest.test_tallies import (  # noqa: F401
    test_a_comment_only_feedback_is_not_labelled_on_the_dashboard_as_in_the_report,
    test_coverage_matches_the_training_view_in_any_landing_order,
    test_drops_per_day_and_reason_are_tallied_as_batches_land,
    test_imported_feedback_without_the_truth_labels_nothing,
)


async def test_imported_labels_count_in_the_label_coverage_on_a_lake(server, tmp_path, vibration):
    """Labels imported through POST /v1/feedback/{model} on a lake add to label_coverage as device feedback does."""
    from tests.ingest.conftest import make_table, seal
    from tests.ingest.fleet_truth import PAIRS, assert_aggregates_match_async

    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=8)
    batch_id, body = seal(tmp_path, vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    label = next(spec.name for spec in vibration.section("feedback"))
    rows = [{"row": index, "record_id": str(record_id), "fields": {label: "normal"}} for index, record_id in enumerate(ids[:3])]
    async with server.session.post(f"{server.url}/v1/feedback/vibration", json={"source": "test", "tag": "t1", "rows": rows},
                                   headers={"Authorization": f"Bearer {server.admin_token}"}) as response:
        answer = await response.json()
        assert response.status == 200 and answer["imported"] == 3, answer
    await assert_aggregates_match_async(server.sql, {"coverage": PAIRS["coverage"]})
    assert (await server.sql("SELECT labelled FROM label_coverage"))[0]["labelled"] == 3
