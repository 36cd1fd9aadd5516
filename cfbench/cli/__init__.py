"""The ``cfbench`` command line: one verb per job.

    cfbench demo                                  the whole pipeline on the embedded phantom suite
    cfbench run --model NAME --split SPLIT        generate, then evaluate
    cfbench generate --model NAME --split SPLIT   generate only (resumable)
    cfbench eval --run DIR                        evaluate a run folder
    cfbench check --model NAME --split SPLIT      preflight: data, weights, evaluator weights, disk, device
    cfbench models                                registered models, capabilities, weights
    cfbench config [set KEY VALUE]                settings in force and where they come from
    cfbench data phantom --n 600 --out DIR        write a phantom dataset
    cfbench train instructx2x --data D --base B --out O   fine-tune InstructX2X (resumable)
    cfbench convert-ckpt CKPT --config DIR --out DIR      LDM checkpoint -> diffusers folder
    cfbench data build mimic|nih|icg ...          build an edit dataset from a public or PhysioNet release
    cfbench masks build [--ms-cxr CSV ...]        pseudo masks for edit locality and RSE
    cfbench masks import-instructx2x DIR --out F  the InstructX2X release's masks and matching, from a clone
    cfbench leaderboard RUN_DIR... --out DIR      tables (md/csv/tex), plots, index.html and an HTML gallery
    cfbench export RUN_DIR                        a shareable results bundle (no images, no patient data)
    cfbench validate --out DIR                    the metric-validity suite on phantoms
"""

from __future__ import annotations

import argparse
import sys
import warnings

from cfbench.api.registry import PluginError, PluginWarning, UnknownModelError
from cfbench.cli import check, data, leaderboard, phantom, run, settings, train, validate
from cfbench.cli.common import CliError, quiet_libraries, use_help_formatter
from cfbench.core import config
from cfbench.core.errors import WeightsFolderError, WeightsNotFoundError
from cfbench.core.hub import HubSpecError
from cfbench.core.storage import DiskFullError, LockedError
from cfbench.datasets.layout import DatasetError
from cfbench.evaluation.preflight import PreflightError
from cfbench.evaluation.protocol import EvaluationError
from cfbench.evaluation.weights_trust import UntrustedWeightsError
from cfbench.runs.manifest import ManifestError
from cfbench.runs.store import RunConfigMismatch, RunFolderError, RunInProgress

VERB_GROUPS = (leaderboard, validate, run, check, settings, phantom, data, train)  # the order of `cfbench --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfbench",
        description="Benchmark counterfactual chest X-ray generators: "
                    "split -> model.edit -> run folder -> evaluators -> metrics -> leaderboard.",
    )
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars, cfbench's or the libraries' (diffusers, transformers, tqdm)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for group in VERB_GROUPS:
        group.add_verbs(verbs)
    use_help_formatter(parser)
    return parser


USER_ERRORS = (CliError, DatasetError, UnknownModelError, PluginError, WeightsNotFoundError, RunConfigMismatch,
               config.ConfigError, EvaluationError, FileNotFoundError, LockedError, UntrustedWeightsError, ManifestError,
               RunFolderError, RunInProgress, HubSpecError, DiskFullError,
               WeightsFolderError, PreflightError)


def _apply_allocator_setting() -> None:
    """The ``allocator`` setting (cfbench.core.allocator), applied before any work."""
    from cfbench.core.allocator import apply_allocator_policy

    setting = config.resolve("allocator")
    try:
        apply_allocator_policy(setting.value)
    except ValueError as error:
        raise config.ConfigError(f"setting allocator ({setting.source}): {error}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    format_warning = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None) -> str:
        """cfbench's own warnings (a broken plugin) as one line without source location; others as Python's."""
        if issubclass(category, PluginWarning):
            return f"cfbench: warning: {message}\n"
        return format_warning(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        if args.verb != "config":  # `cfbench config` must run to repair a bad value
            config.check_settings()
            _apply_allocator_setting()
        with quiet_libraries(args.quiet):
            return args.handler(args)
    except USER_ERRORS as error:
        print(f"cfbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cfbench: interrupted; finished samples are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = format_warning


if __name__ == "__main__":
    sys.exit(main())
