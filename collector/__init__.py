"""edgeloop's device side. Apps import ``Client``; the rest runs inside ``edgeloop-collector``."""

from collector.client import Client

__all__ = ["Client"]
