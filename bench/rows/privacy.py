"""Row 8, the ``redact`` rule: strings/s, recall and false redactions, next to Microsoft Presidio.

The strings: a realistic mix drawn from the redaction corpus (``tests/privacy/corpus.jsonl``,
57 Faker locales), half of them holding PII (log lines, CSV rows, JSON, URLs, OCR text,
notes) and half look-alikes that must survive (signed decimals, epochs, UUIDs, hashes,
dates, barcodes...), every one distinct. Each locale's strings are one column, redacted by a
``Redactor`` declaring its region with ``redact_many``, as a device in that country redacts a
batch's field; four passes over the mix, each with new
redactors, so no redactor sees a string twice and its caches of repeated values never help (a
fleet's real text repeats far more: the figure is the worst case). Before them one pass with
redactors that are thrown away compiles what a running device compiled long ago (its
regions' number patterns, 57 regions here); that pass's rate is in the details as the cold one.
Presidio is warmed the same way, by one pass over its strings.

The reference: Presidio's pattern recognizers (presidio-analyzer, no NLP model, so no
names) for the kinds it has: e-mail, phone (its libphonenumber matcher, same region),
credit card, IBAN, IP, MAC, US SSN, UK NINO. Every result it returns is a redaction, as
its anonymizer does by default. Recall counts a PII value as caught when no part of it
is left in the output; JWTs, API keys and URL secrets, which Presidio has no recognizer
for, count as misses for it, and are also reported apart ("kinds both cover").
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from itertools import groupby
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Bench, Goal, Row, Unavailable

NUMBERS = (8,)
TITLE = "redact"
CORPUS = ROOT / "tests" / "privacy" / "corpus.jsonl"
CPU_SECONDS: list[float] = []
COLD_SECONDS: list[float] = []
PRESIDIO_KINDS = {"email", "phone", "card", "iban", "ipv4", "ipv6", "mac", "ssn", "nino"}


def pii_value(case: dict[str, Any]) -> str:
    """The PII in a case: what its text has where its expected output has the placeholder."""
    text, expected = case["text"], case["expected"]
    prefix = 0
    while prefix < min(len(text), len(expected)) and text[prefix] == expected[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(text), len(expected)) - prefix and text[-1 - suffix] == expected[-1 - suffix]:
        suffix += 1
    return text[prefix : len(text) - suffix]


def mix(seed: int = 8) -> list[dict[str, Any]]:
    """Every look-alike of the corpus and as many PII cases, each string once, grouped by region (a device has one)."""
    cases = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(seed)
    pii = [case for case in cases if not case["kind"].startswith("lookalike")]
    lookalikes = [case for case in cases if case["kind"].startswith("lookalike")]
    half = min(len(pii), len(lookalikes))
    chosen = rng.sample(pii, half) + rng.sample(lookalikes, half)
    chosen.sort(key=lambda case: case["region"])
    return chosen


def score(cases: list[dict[str, Any]], outputs: list[str]) -> dict[str, Any]:
    """Recall over PII cases (overall, per kind, over the kinds Presidio covers) and altered look-alikes."""
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    altered = lookalikes = 0
    for case, out in zip(cases, outputs, strict=True):
        if case["kind"].startswith("lookalike"):
            lookalikes += 1
            altered += out != case["text"]
            continue
        total[case["kind"]] += 1
        caught[case["kind"]] += pii_value(case) not in out
    both = sum(total[k] for k in PRESIDIO_KINDS)
    return {
        "recall": sum(caught.values()) / sum(total.values()),
        "recall_common_kinds": sum(caught[k] for k in PRESIDIO_KINDS) / both,
        "recall_by_kind": {kind: round(caught[kind] / total[kind], 4) for kind in sorted(total)},
        "false_redactions": altered,
        "lookalikes": lookalikes,
    }


def run_edgeloop(cases: list[dict[str, Any]], passes: int) -> tuple[list[str], float]:
    """Each pass redacts every string once with new redactors: no string is ever seen twice by one redactor."""
    from edgeloop.collector.redact import Redactor

    regions = {case["region"] for case in cases}
    # A device compiled its region's number patterns long ago: one pass with redactors thrown away warms the process's
    # compiled regexes and phone metadata (no answer for a string is kept outside a redactor). Its rate is the cold one.
    started = time.perf_counter()
    redact_columns({region: Redactor(regions=[region]) for region in regions}, cases)
    COLD_SECONDS.append(time.perf_counter() - started)
    seconds = cpu_s = 0.0
    for _ in range(passes):
        redactors = {region: Redactor(regions=[region]) for region in regions}
        started, cpu = time.perf_counter(), time.process_time()
        outputs = redact_columns(redactors, cases)
        cpu_s += time.process_time() - cpu
        seconds += time.perf_counter() - started
    CPU_SECONDS.append(cpu_s)  # on a busy machine, what one idle core would do
    return outputs, seconds


def redact_columns(redactors: dict[str, Any], cases: list[dict[str, Any]]) -> list[str]:
    """Each region's strings as one column, as the agent redacts a batch's field (``redact`` one by one for a
    version of the redactor without ``redact_many``)."""
    outputs: list[str] = []
    for region, group in groupby(cases, key=lambda case: case["region"]):
        redactor = redactors[region]
        texts = [case["text"] for case in group]
        if hasattr(redactor, "redact_many"):
            outputs += redactor.redact_many(texts)
        else:
            outputs += [redactor.redact(text) for text in texts]
    return outputs


def presidio(regions: set[str]) -> dict[str, list[Any]]:
    """Presidio's pattern recognizers per region (no NLP engine, no model)."""
    try:
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            MacAddressRecognizer,
            PhoneRecognizer,
            UkNinoRecognizer,
            UsSsnRecognizer,
        )
    except ImportError:
        raise Unavailable("presidio-analyzer is not installed (pip install 'edgeloop[bench]')") from None
    import tldextract.tldextract

    # Its e-mail check would fetch the public suffix list from the network; the bundled copy does.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    shared = [EmailRecognizer(), CreditCardRecognizer(), IbanRecognizer(), IpRecognizer(), MacAddressRecognizer(),
              UsSsnRecognizer(), UkNinoRecognizer()]  # fmt: skip
    return {region: [*shared, PhoneRecognizer(supported_regions=[region])] for region in regions}


def run_presidio(cases: list[dict[str, Any]]) -> tuple[list[str], float]:
    recognizers = presidio({case["region"] for case in cases})
    for case in cases:  # warmed as ours is: one pass over the same strings first
        for recognizer in recognizers[case["region"]]:
            recognizer.analyze(case["text"], recognizer.supported_entities, None)
    started = time.perf_counter()
    outputs = []
    for case in cases:
        text = case["text"]
        spans = []
        for recognizer in recognizers[case["region"]]:
            for result in recognizer.analyze(text, recognizer.supported_entities, None):
                spans.append((result.start, result.end, f"<{result.entity_type}>"))
        outputs.append(replace(text, spans))
    return outputs, time.perf_counter() - started


def replace(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Overlapping spans merged, each replaced by its placeholder (what Presidio's anonymizer does)."""
    out, done = [], 0
    for start, end, label in sorted(spans, key=lambda span: (span[0], -span[1])):
        if start < done:
            continue
        out.append(text[done:start])
        out.append(label)
        done = end
    out.append(text[done:])
    return "".join(out)


def measure(bench: Bench) -> list[Row]:
    cases = mix()
    if bench.quick:
        cases = cases[::5]
    passes = 1 if bench.quick else 4
    ours, ours_s = run_edgeloop(cases, passes)
    n = len(cases) * passes
    mine = score(cases, ours)
    chars = sum(len(case["text"]) for case in cases) / len(cases)
    bench.details.update(strings=n, distinct_strings=len(cases), mean_chars=round(chars, 1), edgeloop=mine,
                         strings_per_cpu_s=round(n / CPU_SECONDS[-1]), cold_pass_strings_per_s=round(len(cases) / COLD_SECONDS[-1]))
    if bench.quick:
        # Importing Presidio (spaCy underneath) alone outlasts the quick run's budget: full runs only.
        return [
            Row(8, "redact, strings/s (half PII, corpus mix)", "/s", n / ours_s, goals=(Goal("edgeloop", ">=", 50_000),),
                note=f"{chars:.0f} chars on average, no string repeated; Presidio in full runs"),
            Row(8, "redact recall, PII values caught", "", mine["recall"]),
            Row(8, "redact false redactions (look-alikes altered)", "", mine["false_redactions"],
                note=f"of {mine['lookalikes']} look-alikes"),
        ]  # fmt: skip
    sample = cases[::4]  # Presidio is slower: a spread-out part of the same mix
    try:
        theirs, theirs_s = run_presidio(sample)
    except Unavailable as exc:
        reason = str(exc)
        return [
            Row(8, "redact, strings/s (half PII, corpus mix)", "/s", n / ours_s, goals=(Goal("edgeloop", ">=", 50_000),),
                note=f"{chars:.0f} chars on average, no string repeated"),
            Row(8, "redact recall, PII values caught", "", mine["recall"], "Presidio patterns", None, unavailable=reason),
        ]  # fmt: skip
    their = score(sample, theirs)
    mine_sample = score(sample, ours[::4])
    bench.details.update(presidio=their, presidio_strings=len(sample))
    return [
        Row(8, "redact, strings/s (half PII, corpus mix)", "/s", n / ours_s, "Presidio patterns", len(sample) / theirs_s,
            goals=(Goal("edgeloop", ">=", 50_000),), note=f"{chars:.0f} chars on average, no string repeated"),
        Row(8, "redact recall, PII values caught", "", mine_sample["recall"], "Presidio patterns", their["recall"]),
        Row(8, "redact recall, kinds both cover", "", mine_sample["recall_common_kinds"], "Presidio patterns",
            their["recall_common_kinds"]),
        Row(8, "redact false redactions (look-alikes altered)", "", mine_sample["false_redactions"], "Presidio patterns",
            their["false_redactions"], note=f"of {mine_sample['lookalikes']} look-alikes"),
    ]  # fmt: skip


def against(path: Path, passes: int = 8) -> None:
    """Another version of collector/redact.py (``git show REV:collector/redact.py > old.py``) and this one on the mix,
    passes of the two interleaved in one process, each with new redactors: the best CPU time of each, so a busy
    machine slows both alike, and whether every output is the same."""
    import importlib.util
    import sys

    from edgeloop.collector import redact as this

    spec = importlib.util.spec_from_file_location("redact_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench: cannot load {path}")
    other = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = other  # its dataclasses look their module up
    spec.loader.exec_module(other)
    cases = mix()
    regions = {case["region"] for case in cases}
    best = {"other": float("inf"), "this": float("inf")}
    outputs: dict[str, list[str]] = {}
    for _ in range(passes):
        for name, module in (("other", other), ("this", this)):
            redactors = {region: module.Redactor(regions=[region]) for region in regions}
            started = time.process_time()
            outputs[name] = redact_columns(redactors, cases)
            best[name] = min(best[name], time.process_time() - started)
    n = len(cases)
    changed = sum(a != b for a, b in zip(outputs["other"], outputs["this"], strict=True))
    print(f"{path}: {n / best['other']:,.0f} strings/CPU-s; this: {n / best['this']:,.0f} strings/CPU-s "
          f"({best['other'] / best['this']:.2f}x); outputs that differ: {changed} of {n}")


def main() -> None:
    """Run the row alone: python -m bench.rows.privacy [--quick] | --against OLD_REDACT_PY."""
    import sys
    import tempfile

    if "--against" in sys.argv:
        against(Path(sys.argv[sys.argv.index("--against") + 1]))
        return
    with tempfile.TemporaryDirectory() as work:
        bench = Bench(quick="--quick" in sys.argv, work=Path(work))
        for row in measure(bench):
            print(row)
        print(json.dumps(bench.details, indent=1))


if __name__ == "__main__":
    main()
