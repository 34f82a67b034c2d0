"""A model-based detector for the ``privacy.detector`` hook, built from Microsoft Presidio.

Presidio's pattern recognizers run without an NLP model; this one finds UK postcodes, a part
of a street address that no edgeloop pattern looks for. A device that can afford a spaCy
model would return Presidio's PERSON and LOCATION results the same way.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _recognizers() -> list[Any]:
    import tldextract.tldextract
    from presidio_analyzer.predefined_recognizers import UkPostcodeRecognizer

    # Presidio's e-mail check would fetch the public suffix list; nothing downloads at run time.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    return [UkPostcodeRecognizer()]


def detect(text: str) -> list[tuple[int, int, str]]:
    """(start, end, label) for every postcode Presidio finds in ``text``."""
    return [
        (result.start, result.end, result.entity_type)
        for recognizer in _recognizers()
        for result in recognizer.analyze(text, recognizer.supported_entities, None)
    ]
