"""The ingest service: authenticated, idempotent landing of Parquet batches in DuckDB.

Tables a user queries (flat, typed columns; field names come from the model's schema file):

    <model>             one row per prediction: record_id, model_version, created_at,
                        sample_weight, sampled_by (the strategies that kept it, ","-joined),
                        policy_version, every stored input and output field, then the
                        landing columns device, batch_id, received_at, clock_offset_s
    <model>_feedback    one row per feedback record: record_id, prediction_id, model_version,
                        created_at, sample_weight, source, the feedback fields, landing columns
    <model>_training    view: every prediction with, per feedback field, its latest non-null
                        value (by created_at); feedback_id, feedback_created_at, feedback_source
                        and labeled_by name the latest feedback carrying the truth field
    batches             the ledger: one row per landed batch
    devices             device names, token hashes, created/revoked times
    models              the latest schema (canonical JSON) seen per model
    policies            every version of every model's sampling policy, with its target
    device_tags         the tags policies can target (``edgeloop-ingest devices tag``)

clock_offset_s = server receive time − the device's ``X-Edgeloop-Sent-At``; subtract it from
a device timestamp to put it on the server's clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeloop.ingest.app import create_app
    from edgeloop.ingest.config import IngestConfig
    from edgeloop.ingest.store import Store

__all__ = ["IngestConfig", "Store", "create_app"]

_WHERE = {"create_app": "app", "IngestConfig": "config", "Store": "store"}


def __getattr__(name: str) -> Any:
    # Loaded on first use, so the CLI can say "install the server extra" before DuckDB is imported.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"edgeloop.ingest.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'edgeloop.ingest' has no attribute {name!r}")
