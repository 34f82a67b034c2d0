"""The DuckLake store passes the DuckDB store's upload, deduplication, deletions-hold, control-character and field performance page tests (the ``server`` fixture is a lake here)."""

from tests.ingest.test_control_text import (  # noqa: F401
    test_control_characters_are_stored_as_sent_and_shown_escaped_on_every_dashboard_page,
)
from tests.ingest.test_dashboard import (  # noqa: F401
    test_the_field_performance_page_has_the_series_the_calibration_plot_and_the_rollout,
)
from tests.ingest.test_dedup import (  # noqa: F401
    test_concurrent_uploads_of_the_same_ids_under_other_batch_ids_land_once,
    test_feedback_ids_are_deduplicated_in_their_own_table,
    test_partial_overlap_and_repeats_inside_one_batch,
    test_same_record_ids_in_two_batches_land_once,
)
from tests.ingest.test_deletion import (  # noqa: F401
    test_a_before_deletion_keeps_no_tombstones_and_late_feedback_stays_out_of_training,
    test_an_erasure_before_anything_landed_holds_and_is_kept_without_the_pseudonym,
    test_an_erasure_holds_against_rows_uploaded_after_it,
    test_feedback_on_a_deleted_prediction_is_left_out_when_it_lands_later,
    test_tombstones_expire_after_tombstone_days,
)
from tests.ingest.test_upload import (  # noqa: F401
    test_bad_bodies_and_ids_are_400,
    test_clock_offset_and_landing_columns,
    test_concurrent_uploads_of_one_new_id_land_once,
    test_every_error_has_one_shape,
    test_health_and_metrics,
    test_land_then_replay,
    test_rows_that_cannot_land_are_422,
    test_same_id_other_content_is_409,
    test_training_view_picks_latest_feedback,
    test_unknown_and_revoked_tokens_are_401,
    test_wrong_content_type_is_415,
    test_wrong_schema_is_422_with_column_details,
)
