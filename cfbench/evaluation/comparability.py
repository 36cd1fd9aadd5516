"""Which evaluated runs may stand in one table: the comparability key of a run's metrics.json.

Two runs' numbers are comparable only when they were measured on the same data in the same way. The key
names exactly that (:func:`comparability_key`):

- ``dataset``: the dataset's kind and the SHA-256 of its ``instructions.csv`` (the dataset fingerprint);
- ``split`` and ``resolution`` (benchmark image side in pixels);
- ``evaluators``: the identity of every evaluator (weights SHA-256, preprocessing), library versions left out;
- ``protocol``: every protocol option that changes a value (interval-only options such as the number of
  bootstrap resamples or the confidence level are left out: they change intervals, not values);
- ``metric_schema_version``: the version of the metric definitions (:data:`METRIC_SCHEMA_VERSION`).

``cfbench eval`` writes the key into metrics.json (``comparability``); for a metrics.json written before, it is
derived from the fields the file has. :func:`key_differences` names the fields in which two keys differ; the
leaderboard and ``cfbench compare`` refuse runs whose keys differ (or, with ``--allow-mixed``, split them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

METRIC_SCHEMA_VERSION = 1
"""Raised whenever a metric's definition (not its value on some data) changes."""

INTERVAL_ONLY_OPTIONS: tuple[str, ...] = ("confidence_level", "bootstrap_resamples", "fid_bootstrap_resamples",
                                          "bootstrap_seed")
LIBRARY_VERSION_KEYS: tuple[str, ...] = ("torch_version", "torchxrayvision_version")
KEY_FIELDS: tuple[str, ...] = ("dataset", "split", "resolution", "evaluators", "protocol", "metric_schema_version")


class MetricsFileError(ValueError):
    """A metrics.json that is not an evaluation written by cfbench (malformed or foreign); names the file."""


def _without_versions(identity: Any) -> Any:
    if isinstance(identity, dict):
        return {key: _without_versions(value) for key, value in identity.items() if key not in LIBRARY_VERSION_KEYS}
    if isinstance(identity, list):
        return [_without_versions(value) for value in identity]
    return identity


def comparability_key(metrics: dict) -> dict[str, Any]:
    """The comparability key of one evaluation (a metrics.json as a dict): the stored ``comparability`` entry,
    else derived from the file's run, dataset, evaluator and protocol fields. MetricsFileError when the dict
    lacks what a cfbench evaluation holds."""
    stored = metrics.get("comparability") if isinstance(metrics, dict) else None
    if isinstance(stored, dict) and set(KEY_FIELDS) <= set(stored):
        return {field: stored[field] for field in KEY_FIELDS}
    if not isinstance(metrics, dict) or not isinstance(metrics.get("metrics"), dict):
        raise MetricsFileError("not a cfbench evaluation (no 'metrics' table)")
    run, dataset = metrics.get("run"), metrics.get("dataset")
    if not isinstance(run, dict) or not isinstance(dataset, dict):
        raise MetricsFileError("not a cfbench evaluation (no 'run' and 'dataset' records)")
    protocol = metrics.get("protocol") if isinstance(metrics.get("protocol"), dict) else {}
    evaluators = [metrics.get("evaluator")] + list(metrics.get("extra_evaluators") or [])
    return {
        "dataset": f"{dataset.get('kind', 'unknown')} instructions.csv sha256:"
                   f"{dataset.get('csv_sha256') or run.get('dataset_csv_sha256')}",
        "split": dataset.get("split", run.get("split")),
        "resolution": run.get("resolution"),
        "evaluators": [_without_versions(identity) for identity in evaluators if identity is not None],
        "protocol": {key: value for key, value in sorted(protocol.items()) if key not in INTERVAL_ONLY_OPTIONS},
        "metric_schema_version": metrics.get("metric_schema_version", METRIC_SCHEMA_VERSION),
    }


def describe_value(value: Any) -> str:
    """A key field's value in one short word: itself when plain, else a fingerprint of its JSON."""
    if isinstance(value, (dict, list)):
        names = [item.get("evaluator") or item.get("name") for item in value if isinstance(item, dict)] \
            if isinstance(value, list) else []
        digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]
        return f"{'+'.join(str(n) for n in names if n) or type(value).__name__} #{digest}"
    return str(value)


def key_differences(first: dict, second: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The key fields in which two comparability keys differ (``ignore``: fields not compared)."""
    return [field for field in KEY_FIELDS if field not in ignore and first.get(field) != second.get(field)]
