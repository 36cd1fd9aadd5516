"""Model options: ``--option key=value`` strings -> a typed, checked settings dataclass.

An adapter declares its options as a frozen dataclass subclassing :class:`ModelOptions` (field names,
types int/float/str/bool, defaults, and ``choices`` for string options with a fixed set of values) and
builds it with ``Settings.from_options(context.options)``: unknown keys, unconvertible values and values
outside ``choices`` raise ValueError naming the option; ``check`` validates ranges.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _to_bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


_CONVERTERS: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": _to_bool}


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Base of adapters' option dataclasses (see the module docstring)."""

    choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def from_options(cls, options: dict[str, str]):
        """Build from ``--option`` strings, converting each to its field's type; unknown keys are errors."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known options: {sorted(fields)}")
        values = {}
        for key, text in options.items():
            declared = fields[key].type  # "int" under `from __future__ import annotations`, else int
            converter = _CONVERTERS[getattr(declared, "__name__", declared)]
            try:
                values[key] = converter(text)
            except ValueError as error:
                raise ValueError(f"option {key}={text!r}: expected {fields[key].type}") from error
        settings = cls(**values)
        for name, allowed in cls.choices.items():
            if getattr(settings, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(settings, name)!r}")
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ValueError for values out of range (override)."""
