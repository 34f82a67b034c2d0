"""edgeloop: close the data loop for ML models on edge devices.

An inference app needs one name::

    from edgeloop import Client

The device agent lives in ``edgeloop.collector``, the ingest service in ``edgeloop.ingest``,
the record contract both share in ``edgeloop.schemas``; ``edgeloop.errors``,
``edgeloop.settings``, ``edgeloop.durable`` and ``edgeloop.logs`` are the infrastructure both
sides import (and that imports neither side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeloop.collector.client import Client

    __version__: str

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # The SDK loads on first use, so importing edgeloop.errors or edgeloop.settings stays light.
    if name == "Client":
        from edgeloop.collector.client import Client

        return Client
    # The version too: importlib.metadata is a tenth of `edgeloop-collector status`'s start-up, which does not print it.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("edgeloop")
        except PackageNotFoundError:  # running from a source tree that was never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'edgeloop' has no attribute {name!r}")
