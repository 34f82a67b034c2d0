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
    test_coverage_matches_the_training_view_in_any_landing_order,
    test_drops_per_day_and_reason_are_tallied_as_batches_land,
)
