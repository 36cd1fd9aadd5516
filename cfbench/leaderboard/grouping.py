"""Which runs may share a leaderboard table: runs are grouped by their comparability key
(:func:`cfbench.evaluation.comparability.comparability_key`); one table never mixes two groups, and bold is
never given across groups."""

from __future__ import annotations

from cfbench.evaluation.comparability import KEY_FIELDS, comparability_key, describe_value, key_differences
from cfbench.leaderboard.table_model import LeaderboardError, RunSummary


def comparable_groups(runs: list[RunSummary]) -> list[list[RunSummary]]:
    """The runs split by comparability key, in order of first appearance (one group when all agree)."""
    groups: list[tuple[dict, list[RunSummary]]] = []
    for run in runs:
        key = comparability_key(run.metrics)
        for group_key, members in groups:
            if group_key == key:
                members.append(run)
                break
        else:
            groups.append((key, [run]))
    return [members for _, members in groups]


def describe_groups(groups: list[list[RunSummary]]) -> str:
    """'runs differ in resolution (a, b: 64; c: 32); split (...)': every key field that differs between groups."""
    keys = [comparability_key(members[0].metrics) for members in groups]
    fields = [field for field in KEY_FIELDS if any(field in key_differences(keys[0], key) for key in keys[1:])]
    parts = []
    for field in fields:
        values = "; ".join(f"{', '.join(run.label for run in members)}: {describe_value(key[field])}"
                           for key, members in zip(keys, groups))
        parts.append(f"{field} ({values})")
    return "runs differ in " + "; ".join(parts)


def require_comparable(runs: list[RunSummary]) -> None:
    """LeaderboardError naming the difference when the runs do not share one comparability key."""
    groups = comparable_groups(runs)
    if len(groups) > 1:
        raise LeaderboardError(f"{describe_groups(groups)}: their numbers cannot share a table. Give runs of "
                               "one setting, or --allow-mixed for one table set per setting")
