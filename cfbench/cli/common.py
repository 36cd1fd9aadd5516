"""What every verb group of the command line shares: the user-error type, option parsing, progress, numbers."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import re
import sys


class CliError(RuntimeError):
    """An error the user can fix; printed without a traceback."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default (unless the text already names it or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS or action.option_strings == []
                or re.search(r"\(default|; default|default:|default \{", text) or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def use_help_formatter(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every sub-command parser under it :class:`HelpFormatter`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                if child.description is None and helps.get(name):  # the one-line help, as the page's description
                    child.description = helps[name][0].upper() + helps[name][1:] + "."
                use_help_formatter(child)


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


# What --quiet sets for the libraries cfbench calls (and the processes they start): tqdm's bars (diffusers'
# sampling loops and huggingface_hub use tqdm; in this process every tqdm bar is disabled for the command),
# and the diffusers / transformers loggers' info messages.
QUIET_ENVIRONMENT = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DIFFUSERS_VERBOSITY": "error",
                     "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


@contextlib.contextmanager
def quiet_libraries(quiet: bool):
    """Under --quiet, silence the libraries' progress bars and chatter for the command, then restore."""
    if not quiet:
        yield
        return
    saved = {key: os.environ.get(key) for key in QUIET_ENVIRONMENT}
    os.environ.update(QUIET_ENVIRONMENT)
    for name in ("diffusers", "transformers"):  # already imported: their loggers read the variable at import
        if name in sys.modules:
            module = importlib.import_module(f"{name}.utils.logging")
            module.set_verbosity_error()
            if hasattr(module, "disable_progress_bar"):
                module.disable_progress_bar()
    from tqdm import std

    original_init = std.tqdm.__init__  # TQDM_DISABLE is read when tqdm is imported: too late for a loaded tqdm

    @functools.wraps(original_init)
    def silent_init(self, *args, **kwargs):
        kwargs["disable"] = True
        original_init(self, *args, **kwargs)

    std.tqdm.__init__ = silent_init
    try:
        yield
    finally:
        std.tqdm.__init__ = original_init
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report_build(counts: dict, source: str, out: str) -> int:
    """Print what a dataset build wrote and the first failures; the exit status."""
    print(f"wrote {counts['written']} of {counts['pairs']} {source} pairs to {out}")
    for message in counts["failed"][:20]:
        print(f"  failed: {message}", file=sys.stderr)
    if len(counts["failed"]) > 20:
        print(f"  ... and {len(counts['failed']) - 20} more (see dataset.json)", file=sys.stderr)
    return 0


MIN_RESOLUTION = 16  # pixels; the phantom renderer and every network need at least this


def resolution_type(text: str) -> int:
    """argparse type of an image side in pixels: an integer >= 16."""
    value = positive_int(text)
    if value < MIN_RESOLUTION:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_RESOLUTION} pixels, got {value}")
    return value


def _parse(text: str, convert, expected: str):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type of a count: an integer >= 1."""
    value = _parse(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def batch_size_type(text: str) -> int | str:
    """argparse type of ``--batch-size``: "auto" (cfbench.runs.batching) or an integer >= 1."""
    return "auto" if text.strip().lower() == "auto" else positive_int(text)


def non_negative_int(text: str) -> int:
    """argparse type of a count that may be 0 (e.g. data-loading worker processes: 0 = load in the main one)."""
    value = _parse(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type of a duration or a scale: a finite number > 0."""
    value = _parse(text, float, "a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value
