"""Prometheus view of the continual deployment loop's decisions (`ROOT/decisions.jsonl`, written by
`python -m export.promote`): how many candidate versions were published or refused, and the last one's numbers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from export.manifest import DECISIONS


def read_decisions(root: Path) -> list[dict]:
    """Every complete decision line (a line being written is skipped until it is whole)."""
    path = Path(root) / DECISIONS
    if not path.is_file():
        return []
    decisions = []
    for line in path.read_text().splitlines():
        try:
            decisions.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return decisions


class DecisionCollector:
    """Read at scrape time, so decisions made by another process show up without coordination."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def collect(self) -> Iterator[Metric]:
        decisions = read_decisions(self.root)
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
