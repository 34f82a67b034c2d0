"""edgeloop: close the data loop for ML models on edge devices.

An inference app needs one name::

    from edgeloop import Client

The device agent lives in ``edgeloop.collector``, the ingest service in ``edgeloop.ingest``,
the record contract both share in ``edgeloop.schemas``; ``edgeloop.errors``,
``edgeloop.settings``, ``edgeloop.durable`` and ``edgeloop.logs`` are the infrastructure both
sides import (and that imports neither side).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeloop.collector.client import Client

try:
    __version__ = version("edgeloop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # The SDK loads on first use, so importing edgeloop.errors or edgeloop.settings stays light.
    if name == "Client":
        from edgeloop.collector.client import Client

        return Client
    raise AttributeError(f"module 'edgeloop' has no attribute {name!r}")
