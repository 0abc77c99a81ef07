"""Prometheus view of the continual deployment loop's decisions (`ROOT/decisions.jsonl`, written by
`python -m export.promote`): how many candidate versions were published or refused, and the last one's numbers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from export.manifest import DECISIONS


def _decision(line: str) -> dict | None:
    """One line as a decision, or None when it is not one (half-written, hand-edited, wrong types)."""
    try:
        decision = json.loads(line)
    except ValueError:
        return None
    if not isinstance(decision, dict):
        return None
    for key in ("time", "old_tasks_accuracy_before", "old_tasks_accuracy_after"):
        value = decision.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return None
    return decision


def read_decisions(root: Path) -> tuple[list[dict], int]:
    """(every well-formed decision, how many lines were not one); a line being written counts until whole."""
    path = Path(root) / DECISIONS
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return [], 0
    parsed = [_decision(line) for line in lines if line.strip()]
    return [d for d in parsed if d is not None], sum(d is None for d in parsed)


class DecisionCollector:
    """Read at scrape time, so decisions made by another process show up without coordination."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def collect(self) -> Iterator[Metric]:
        decisions, malformed = read_decisions(self.root)
        skipped = GaugeMetricFamily("hidecl_bundle_decisions_malformed_lines", f"Lines of {DECISIONS} that are no "
                                    "decision (skipped).")
        skipped.add_metric([], float(malformed))
        yield skipped
        counts = CounterMetricFamily("hidecl_bundle_decisions", "Candidate bundle versions published or refused "
                                     "by the guard rails of export.promote.", labels=["decision"])
        for outcome in ("accepted", "refused"):
            counts.add_metric([outcome], sum(1 for d in decisions if d.get("accepted") == (outcome == "accepted")))
        yield counts
        if not decisions:
            return
        last = decisions[-1]
        accepted = GaugeMetricFamily("hidecl_bundle_last_decision_accepted",
                                     "1 if the last candidate version was published, 0 if refused.")
        accepted.add_metric([], float(bool(last.get("accepted"))))
        yield accepted
        when = GaugeMetricFamily("hidecl_bundle_last_decision_timestamp_seconds", "When the last decision was made.")
        when.add_metric([], float(last.get("time", 0.0)))
        yield when
        old = GaugeMetricFamily("hidecl_bundle_last_decision_old_tasks_accuracy_ratio",
                                "Mean accuracy on the tasks the previous version knew, served by it (before) "
                                "and by the candidate (after).", labels=["served_by"])
        for label, key in (("previous", "old_tasks_accuracy_before"), ("candidate", "old_tasks_accuracy_after")):
            if last.get(key) is not None:
                old.add_metric([label], last[key] / 100.0)
        yield old
