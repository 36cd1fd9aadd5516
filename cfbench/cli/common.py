"""What every verb group of the command line shares: the user-error type, option parsing, progress, numbers."""

from __future__ import annotations


class CliError(RuntimeError):
    """An error the user can fix; printed without a traceback."""


def option_pairs(values: list[str] | None) -> dict[str, str]:
    """``--option KEY=VALUE`` strings -> ``{KEY: VALUE}`` (the model checks its own keys and values)."""
    options = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = value
    return options


def progress(args) -> bool:
    """Whether to show progress bars (not under --quiet)."""
    return not getattr(args, "quiet", False)


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report_build(counts: dict, source: str, out: str) -> int:
    """Print what a dataset build wrote and the first failures; the exit status."""
    import sys

    print(f"wrote {counts['written']} of {counts['pairs']} {source} pairs to {out}")
    for message in counts["failed"][:20]:
        print(f"  failed: {message}", file=sys.stderr)
    if len(counts["failed"]) > 20:
        print(f"  ... and {len(counts['failed']) - 20} more (see dataset.json)", file=sys.stderr)
    return 0
