"""Verbs that make and score runs: ``run`` (generate, then evaluate), ``generate``, ``eval``, ``compare``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cfbench.api.model import DEFAULT_RESOLUTION
from cfbench.api.registry import get_model_class, resolve_model_path
from cfbench.cli.common import (
    CliError,
    batch_size_type,
    number,
    option_pairs,
    positive_float,
    positive_int,
    progress,
    resolution_type,
)
from cfbench.core import config
from cfbench.datasets.layout import SPLITS, dataset_kind
from cfbench.evaluation.protocol import AGE_REFERENCES, CLIP_I_VARIANTS, EVALUATORS, KL_VARIANTS, Protocol


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="registered model name (see `cfbench models`) or module:Class")
    parser.add_argument("--split", required=True, choices=SPLITS,
                        help="split to run; 'demo' builds and caches a small phantom set when --data is not given")
    parser.add_argument("--data", metavar="DIR",
                        help="dataset folder (instructions.csv, past/, current/); default: setting data_dir")
    parser.add_argument("--model-path", metavar="P",
                        help="local weights folder/file; default: {weights_dir}/{model's folder}")
    parser.add_argument("--out", metavar="DIR",
                        help="run folder; default: {runs_dir}/{model}-{split}-seed{seed}. "
                             "An existing folder with the same config is resumed.")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N samples of the split")
    parser.add_argument("--batch-size", type=batch_size_type, default="auto", metavar="B",
                        help="requests per model call, or 'auto': a measured choice per device and model, "
                             "recorded in the manifest (results do not depend on it; default auto)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="run seed; each sample's seed is derived from it and the sample id (default 0)")
    parser.add_argument("--device", default="cpu", metavar="D", help="torch device: cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--resolution", type=resolution_type, default=DEFAULT_RESOLUTION, metavar="PX",
                        help=f"benchmark resolution in pixels (default {DEFAULT_RESOLUTION})")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="model-specific option, repeatable")
    parser.add_argument("--sample-timeout", type=positive_float, metavar="SECONDS",
                        help="record the samples of a model call that takes longer than this as failed and go on "
                             "(default: no limit)")
    parser.add_argument("--png-compression", type=int, choices=range(10), default=1, metavar="0-9",
                        help="zlib level of the 16-bit PNGs written (default 1; 0 writes about 2.5x faster, files "
                             "about 22%% larger; pixels identical; recorded in the manifest's runtime)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a dataset with bad rows (default: leave them out, each named with its reason)")


def _data_dir(args) -> Path:
    if args.data:
        return Path(args.data)
    if args.split == "demo":
        from cfbench.phantom.dataset import demo_dataset

        return demo_dataset(config.resolve_path("cache_dir"), resolution=args.resolution, progress=progress(args))
    configured = config.resolve_path("data_dir")
    if configured is None:
        raise CliError(
            "no dataset folder: pass --data DIR, set CFBENCH_DATA_DIR, or run `cfbench config set data_dir DIR` "
            "(or use --split demo for the embedded phantom set)"
        )
    return configured


def _settings_from_args(args):
    from cfbench.runs.generate import RunSettings

    from cfbench.core.errors import WeightsNotFoundError

    model_class = get_model_class(args.model)
    kind = "phantom" if args.split == "demo" and not args.data else None  # the embedded demo set is phantoms
    if kind is None and not args.model_path and model_class.phantom_weights:  # phantom data: the shipped checkpoint
        data = Path(args.data) if args.data else config.resolve_path("data_dir")
        kind = dataset_kind(data) if data else None
    try:
        model_path = resolve_model_path(model_class, args.model_path, kind)
    except WeightsNotFoundError as error:
        if not args.data and args.split != "demo" and config.resolve_path("data_dir") is None:
            raise WeightsNotFoundError(error.missing, "the dataset folder is not set either: pass --data DIR, set "
                                                      "CFBENCH_DATA_DIR or run `cfbench config set data_dir DIR`") from None
        raise
    safe_model = re.sub(r"[^A-Za-z0-9._-]+", "_", args.model)
    out = Path(args.out) if args.out else config.resolve_path("runs_dir") / f"{safe_model}-{args.split}-seed{args.seed}"
    shard, device = _shard_and_device(getattr(args, "shard", None), args.device)
    return RunSettings(
        model=args.model, split=args.split, data_dir=_data_dir(args), out=out, model_path=model_path,
        resolution=args.resolution, seed=args.seed, limit=args.limit, batch_size=args.batch_size,
        device=device, options=option_pairs(args.option), shard=shard, sample_timeout=args.sample_timeout,
        strict=args.strict, png_compression=args.png_compression,
    )


def _shard_and_device(text: str | None, device: str):
    from cfbench.runs.launcher import LauncherError, shard_and_device

    try:
        return shard_and_device(text, device)
    except LauncherError as error:
        raise CliError(f"--shard: {error}") from error


def _generate(args) -> tuple[object, int]:
    from cfbench.runs.generate import generate

    settings = _settings_from_args(args)
    report = generate(settings, progress=progress(args))
    print(f"run folder: {report.run_folder}")
    print(f"samples: {report.total} in scope, {report.already_done} already done, "
          f"{report.generated} generated now, {len(report.failed)} failed ({report.seconds:.1f} s)")
    for message in report.failed[:20]:
        print(f"  failed: {message}", file=sys.stderr)
    if len(report.failed) > 20:
        print(f"  ... and {len(report.failed) - 20} more (see failures.jsonl)", file=sys.stderr)
    return settings, (1 if report.failed else 0)


def _print_metrics(report: dict) -> None:
    """The metrics on the leaderboard's scale, with intervals, n, the reason for each '-' and small-n warnings."""
    from cfbench.leaderboard.console import metric_lines

    evaluator = (report.get("evaluator") or {}).get("evaluator", "none")
    print(f"evaluated {report['n_samples']} of {report['n_in_split']} samples (evaluator: {evaluator})")
    from cfbench.evaluation.protocol import Protocol

    known = {key: tuple(v) if isinstance(v, list) else v for key, v in report.get("protocol", {}).items()
             if key in Protocol.__dataclass_fields__}
    choices = Protocol(**known).choices_text(report.get("metrics", {}), brief=True)
    if choices:
        print(f"  protocol: {choices} (--kl, --age-reference, --clip-i; in words: metrics.json protocol_choices)")
    for line in metric_lines(report):
        print(line)


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation protocol")
    group.add_argument("--evaluator", default="auto", choices=EVALUATORS,
                       help="auto: the shipped phantom CNN on phantom data, torchxrayvision otherwise; "
                            "none: pixel measures only")
    group.add_argument("--eval-batch-size", type=positive_int, default=16, metavar="B",
                       help="images per evaluator call (numbers do not depend on it)")
    group.add_argument("--loader-threads", type=positive_int, default=None, metavar="T",
                       help="threads that read and measure the next batch while the evaluators run (default: "
                            "one per core, at most 8; numbers do not depend on it)")
    group.add_argument("--bootstrap", type=int, default=Protocol.bootstrap_resamples, metavar="N",
                       help="bootstrap resamples for the intervals")
    group.add_argument("--fid-bootstrap", type=int, default=Protocol.fid_bootstrap_resamples, metavar="N",
                       help="bootstrap resamples for FID, each costs a matrix square root (0: no interval)")
    group.add_argument("--confidence", type=float, default=Protocol.confidence_level, metavar="LEVEL",
                       help="confidence level of the percentile bootstrap intervals, in (0, 1)")
    group.add_argument("--label-uncertain", default=Protocol.label_uncertain, choices=["exclude", "positive", "negative"],
                       help="what uncertain (-1) target labels become, per finding")
    group.add_argument("--label-blank", default=Protocol.label_blank, choices=["exclude", "negative"],
                       help="what blank target labels become, per finding")
    group.add_argument("--accuracy-terms", default=",".join(Protocol.accuracy_terms), metavar="NAMES",
                       help="metrics entering CMIG's accuracy mean (comma-separated)")
    group.add_argument("--retention-terms", default=",".join(Protocol.retention_terms), metavar="NAMES",
                       help="metrics entering CMIG's retention mean, e.g. race_auroc,age_pearson or sex_auroc,age_pearson")
    group.add_argument("--f1-threshold", type=float, default=Protocol.f1_threshold, metavar="P",
                       help="probability at or above which a finding counts as predicted present for F1")
    group.add_argument("--kl", dest="kl_variant", default=Protocol.kl_variant, choices=list(KL_VARIANTS),
                       help="KL between mean pathology probabilities on real (P) and generated (Q) images: "
                            + "; ".join(f"{k}: {v}" for k, v in KL_VARIANTS.items()))
    group.add_argument("--age-reference", default=Protocol.age_reference, choices=list(AGE_REFERENCES),
                       help="the true age the predicted age is correlated with: "
                            + "; ".join(f"{k}: {v}" for k, v in AGE_REFERENCES.items()))
    group.add_argument("--clip-i", dest="clip_i_variant", default=Protocol.clip_i_variant, choices=list(CLIP_I_VARIANTS),
                       help="which pair CLIP-I compares (needs --clip-model): "
                            + "; ".join(f"{k}: {v}" for k, v in CLIP_I_VARIANTS.items()))
    group.add_argument("--pseudo-masks", metavar="FILE",
                       help="pseudo masks for edit locality on real data (`cfbench masks build`); "
                            "default: NIH box unions shipped with torchxrayvision")
    group.add_argument("--clip-model", metavar="DIR",
                       help="BiomedCLIP folder (open_clip_config.json + open_clip_pytorch_model.bin) for CLIP-I; "
                            "for --clip-i image-text also text_model/ (BiomedBERT config.json + vocab.txt)")
    group.add_argument("--clip-text-model", metavar="DIR",
                       help="the BiomedBERT folder of the text tower (default: DIR/text_model of --clip-model)")


def _protocol(args) -> Protocol:
    try:
        return Protocol(
            label_uncertain=args.label_uncertain, label_blank=args.label_blank,
            accuracy_terms=tuple(t for t in args.accuracy_terms.split(",") if t),
            retention_terms=tuple(t for t in args.retention_terms.split(",") if t),
            f1_threshold=args.f1_threshold, confidence_level=args.confidence,
            bootstrap_resamples=args.bootstrap, fid_bootstrap_resamples=args.fid_bootstrap,
            kl_variant=args.kl_variant, age_reference=args.age_reference, clip_i_variant=args.clip_i_variant,
        )
    except ValueError as error:
        raise CliError(str(error)) from error


def _evaluate(args, run_folder) -> dict:
    from cfbench.evaluation.evaluate import evaluate_run

    extra = ()
    if args.clip_model:
        from cfbench.evaluation.biomedclip import BiomedCLIPEmbedder

        extra = (BiomedCLIPEmbedder.from_folder(args.clip_model, device=args.device,
                                                text_model=args.clip_text_model,
                                                with_text=args.clip_i_variant == "image-text"),)
    elif args.clip_i_variant == "image-text":
        raise CliError("--clip-i image-text needs --clip-model DIR (BiomedCLIP with its text tower)")
    masks = None
    if args.pseudo_masks:
        from cfbench.datasets.pseudo_masks import PseudoMasks

        masks = PseudoMasks.load(args.pseudo_masks)
    return evaluate_run(run_folder, data_dir=getattr(args, "eval_data", None), evaluator=args.evaluator,
                        protocol=_protocol(args), extra_evaluators=extra, pseudo_masks=masks,
                        batch_size=args.eval_batch_size, device=args.device, progress=progress(args),
                        loader_threads=args.loader_threads)


def cmd_generate(args) -> int:
    return _generate(args)[1]


def cmd_run(args) -> int:
    settings, status = _generate(args)
    _print_metrics(_evaluate(args, settings.out))
    return status


def cmd_eval(args) -> int:
    report = _evaluate(args, args.run)
    _print_metrics(report)
    print(f"wrote {Path(args.run) / 'metrics.json'}, predictions.csv and evaluation.npz")
    return 0


def cmd_compare(args) -> int:
    from cfbench.core.storage import atomic_write_json
    from cfbench.evaluation.results import load_table, read_metrics
    from cfbench.evaluation.scoring import compare_tables

    identities = [read_metrics(run).get("evaluator") for run in (args.run_a, args.run_b)]
    if identities[0] != identities[1]:
        raise CliError("the two runs were evaluated with different evaluators; re-evaluate them with the same one")
    result = compare_tables(load_table(args.run_a), load_table(args.run_b), _protocol(args))
    level = int(round(100 * args.confidence))
    print(f"paired differences A - B on {result['n_shared']} shared samples (A = {args.run_a}, B = {args.run_b})")
    print(f"  {'metric':<34} {'A - B':>8}  {level}% CI            ")
    for name, entry in result["differences"].items():
        low, high = entry["ci_low"], entry["ci_high"]
        verdict = "" if low is None or high is None else ("differs" if low > 0 or high < 0 else "")
        print(f"  {name:<34} {number(entry['value']):>8}  [{number(low)}, {number(high)}]  {verdict}")
    if args.out:
        atomic_write_json(args.out, {"run_a": str(args.run_a), "run_b": str(args.run_b),
                                     "protocol": _protocol(args).as_dict(), **result})
        print(f"wrote {args.out}")
    return 0


def add_verbs(verbs) -> None:
    """The ``run``, ``generate``, ``eval`` and ``compare`` verbs."""
    run = verbs.add_parser("run", help="generate counterfactuals for a split, then evaluate them")
    _add_run_arguments(run)
    _add_eval_arguments(run)
    run.set_defaults(handler=cmd_run)

    gen = verbs.add_parser(
        "generate", help="generate counterfactuals for a split (resumable; --shard for one process per GPU)",
        description="Generate counterfactuals into a run folder; re-run to resume. Many GPUs: start one process per "
                    "GPU with --shard K/N (or --shard auto under torchrun / accelerate launch / srun) and the same "
                    "--out; then `cfbench eval --run OUT` once all are done. Results do not depend on the sharding.")
    _add_run_arguments(gen)
    gen.add_argument("--shard", metavar="K/N",
                     help="generate only part K (0-based) of N of the split; 'auto' reads RANK/WORLD_SIZE (torchrun, "
                          "accelerate) or SLURM_PROCID/SLURM_NTASKS, and --device cuda becomes the local GPU")
    gen.set_defaults(handler=cmd_generate)

    evaluate = verbs.add_parser("eval", help="evaluate a run folder and write metrics.json")
    evaluate.add_argument("--run", required=True, metavar="DIR", help="run folder written by run/generate")
    evaluate.add_argument("--data", dest="eval_data", metavar="DIR",
                          help="dataset folder, if it moved since generation")
    evaluate.add_argument("--device", default="cpu", metavar="D", help="torch device for the evaluators")
    _add_eval_arguments(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    compare = verbs.add_parser(
        "compare", help="paired differences between two evaluated runs, with intervals",
        description="Paired differences A - B of every metric on the samples both runs share, with paired "
                    "bootstrap intervals (the same resampled samples for both runs); 'differs' marks an interval "
                    "that excludes 0. Both runs must have been evaluated with the same evaluator.")
    compare.add_argument("run_a", metavar="RUN_A", help="evaluated run folder A (metrics.json, evaluation.npz)")
    compare.add_argument("run_b", metavar="RUN_B", help="evaluated run folder B")
    compare.add_argument("--out", metavar="FILE", help="also write the differences as JSON")
    _add_eval_arguments(compare)
    compare.set_defaults(handler=cmd_compare)

