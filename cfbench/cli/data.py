"""Verbs that write datasets: ``data phantom``, ``data build mimic|nih|icg`` and ``masks build``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cfbench.api.model import DEFAULT_RESOLUTION
from cfbench.cli.common import CliError, positive_int, progress, report_build, resolution_type


def cmd_data_phantom(args) -> int:
    from cfbench.phantom.dataset import build_phantom_dataset

    out = build_phantom_dataset(args.out, args.n, seed=args.seed, resolution=args.resolution, progress=progress(args))
    print(f"wrote {args.n} phantom pairs to {out}")
    return 0


def cmd_data_build_nih(args) -> int:
    from cfbench.datasets.nih import build_nih_dataset

    counts = build_nih_dataset(args.images, args.out, data_entry=args.data_entry, settings=_pair_settings(args),
                               workers=args.workers, limit=args.limit, progress=progress(args))
    return report_build(counts, "NIH", args.out)


def cmd_data_build_mimic(args) -> int:
    from cfbench.datasets.mimic_build import MimicSources, build_mimic_dataset

    sources = MimicSources(Path(args.mimic_cxr), Path(args.diff_vqa), Path(args.mimic_iv),
                           Path(args.reports) if args.reports else None)
    try:
        info = build_mimic_dataset(sources, args.out, settings=_pair_settings(args), workers=args.workers,
                                   limit=args.limit, ms_cxr=args.ms_cxr, progress=progress(args))
    except FileNotFoundError as error:
        raise CliError(str(error)) from error
    for step, count in info["funnel"].items():
        print(f"  {step}: {count}")
    if info["unknown_phrases"]:
        print(f"  phrases outside the vocabulary: {len(info['unknown_phrases'])} distinct (see DATASET_CARD.md)")
    return report_build(info, "MIMIC-EDIT-INSTRUCTION", args.out)


def _pair_settings(args):
    from cfbench.datasets.pair_engine import PairSettings

    return PairSettings(resolution=args.resolution, register=not args.no_register, mi_threshold=args.mi_threshold)


def cmd_data_build_icg(args) -> int:
    from cfbench.datasets.icg import build_icg_dataset

    counts = build_icg_dataset(args.root, args.out, resolution=args.resolution, progress=progress(args))
    return report_build(counts, "ICG-CXR", args.out)


def cmd_masks_build(args) -> int:
    from cfbench.datasets import pseudo_masks

    if args.ms_cxr:
        if not args.metadata:
            raise CliError("--ms-cxr needs --metadata (mimic-cxr-2.0.0-metadata.csv.gz) for the view positions")
        masks = pseudo_masks.ms_cxr_pseudo_masks(args.ms_cxr, args.metadata, args.resolution)
    else:
        masks = pseudo_masks.nih_pseudo_masks(args.resolution)
    masks.save(args.out)
    print(f"wrote {len(masks.masks)} pseudo masks ({', '.join(sorted(masks.masks))}) from {masks.source} to {args.out}")
    return 0


def cmd_masks_import_instructx2x(args) -> int:
    from cfbench.datasets.instructx2x_masks import import_instructx2x_masks

    try:
        masks = import_instructx2x_masks(args.clone)
    except (FileNotFoundError, ValueError) as error:
        raise CliError(str(error)) from error
    masks.save(args.out)
    missing = masks.provenance["names_without_file"]
    print(f"wrote {len(masks.masks)} InstructX2X release masks ({', '.join(masks.masks)}; {masks.resolution} px) and "
          f"its substring matching over {len(masks.match_names)} names ({len(missing)} without a file select the "
          f"whole image) to {args.out}; use it with --option pseudo_masks={args.out} or cfbench eval --pseudo-masks")
    return 0


def _add_pair_options(parser: argparse.ArgumentParser) -> None:
    from cfbench.datasets.registration import MI_THRESHOLD

    parser.add_argument("--resolution", type=resolution_type, default=DEFAULT_RESOLUTION, metavar="PX",
                        help=f"image side of the written dataset in pixels (default {DEFAULT_RESOLUTION})")
    parser.add_argument("--no-register", action="store_true", help="skip the rigid registration of each pair")
    parser.add_argument("--mi-threshold", type=float, default=MI_THRESHOLD, metavar="MI",
                        help=f"discard pairs whose Mattes MI after registration is above this (default "
                             f"{MI_THRESHOLD}, the paper's; see DATASET_CARD.md for the calibration note)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N", help="worker processes (default 1)")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N pairs")


def add_verbs(verbs) -> None:
    """The ``masks`` and ``data`` verb groups."""
    masks_verb = verbs.add_parser("masks", help="pseudo masks: per finding, the union of expert boxes")
    masks_verbs = masks_verb.add_subparsers(dest="masks_verb", required=True, metavar="JOB")
    masks_build = masks_verbs.add_parser("build", help="build pseudo masks from MS-CXR (or NIH, the default)")
    masks_build.add_argument("--ms-cxr", metavar="CSV", help="MS_CXR_Local_Alignment_v1.1.0.csv")
    masks_build.add_argument("--metadata", metavar="CSV", help="mimic-cxr-2.0.0-metadata.csv(.gz), for PA views")
    masks_build.add_argument("--out", required=True, metavar="FILE", help="output .npz")
    masks_build.add_argument("--resolution", type=resolution_type, default=DEFAULT_RESOLUTION, metavar="PX",
                             help=f"mask side in pixels, the dataset's resolution (default {DEFAULT_RESOLUTION})")
    masks_build.set_defaults(handler=cmd_masks_build)
    masks_import = masks_verbs.add_parser(
        "import-instructx2x", help="the InstructX2X release's own masks and name matching, from your clone",
        description="Reads inference/masks/pseudo_mask_*.npy and the finding names of inference/rse_x2x.py from a "
                    "clone of https://github.com/hgminn/InstructX2X into a pseudo-mask file that selects masks as "
                    "the release does (substring match of each name in the instruction), with a provenance record.")
    masks_import.add_argument("clone", metavar="DIR", help="root folder of your clone of the InstructX2X repository")
    masks_import.add_argument("--out", required=True, metavar="FILE", help="output .npz")
    masks_import.set_defaults(handler=cmd_masks_import_instructx2x)

    data = verbs.add_parser("data", help="build datasets")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="KIND")
    phantom = data_verbs.add_parser("phantom", help="write a phantom dataset with splits train/holdout/test/val")
    phantom.add_argument("--n", type=positive_int, default=600, help="number of pairs (default 600)")
    phantom.add_argument("--out", required=True, metavar="DIR", help="new dataset folder")
    phantom.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the phantom scenarios")
    phantom.add_argument("--resolution", type=resolution_type, default=DEFAULT_RESOLUTION, metavar="PX",
                         help=f"image side in pixels (default {DEFAULT_RESOLUTION})")
    phantom.set_defaults(handler=cmd_data_phantom)
    build = data_verbs.add_parser("build", help="build an edit dataset from a public or credentialed release")
    sources = build.add_subparsers(dest="source", required=True, metavar="SOURCE")
    nih = sources.add_parser("nih", help="NIH ChestX-ray14: consecutive PA pairs with different labels (public)")
    nih.add_argument("--images", required=True, metavar="DIR", help="folder with the NIH images (*.png)")
    nih.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write (resumable)")
    nih.add_argument("--data-entry", metavar="CSV",
                     help="Data_Entry_2017_v2020.csv(.gz); default: the copy inside torchxrayvision")
    _add_pair_options(nih)
    nih.set_defaults(handler=cmd_data_build_nih)
    mimic = sources.add_parser(
        "mimic", help="MIMIC-EDIT-INSTRUCTION from PhysioNet downloads (credentialed)",
        description="Rebuild MIMIC-EDIT-INSTRUCTION: Diff-VQA difference answers -> instructions; PA images of "
                    "both studies, ordered by StudyDate/StudyTime; resized, registered (SimpleITK, Mattes MI); "
                    "CheXpert labels of the later study; age, sex, race; p19 -> holdout. Resumable: run the same "
                    "command again to finish an interrupted build. Writes DATASET_CARD.md with Table-1 statistics.")
    mimic.add_argument("--mimic-cxr", required=True, metavar="DIR",
                       help="MIMIC-CXR-JPG root (files/ and mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz)")
    mimic.add_argument("--diff-vqa", required=True, metavar="CSV", help="Medical-Diff-VQA mimic_pair_questions.csv")
    mimic.add_argument("--mimic-iv", required=True, metavar="DIR",
                       help="MIMIC-IV folder with patients.csv.gz and admissions.csv.gz (or its hosp/ or core/)")
    mimic.add_argument("--ms-cxr", metavar="CSV",
                       help="MS_CXR_Local_Alignment_v1.1.0.csv: also write OUT/pseudo_masks.npz")
    mimic.add_argument("--reports", metavar="DIR",
                       help="MIMIC-CXR reports root (files/p1x/p.../s....txt): the later study's impression becomes "
                            "target_report, the prompt of text-to-image baselines")
    mimic.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write (resumable)")
    _add_pair_options(mimic)
    mimic.set_defaults(handler=cmd_data_build_mimic)
    icg = sources.add_parser("icg", help="ICG-CXR (ProgEmu): pair folders with JSON, prior and follow-up images")
    icg.add_argument("--root", required=True, metavar="DIR", help="folder holding one sub-folder per pair")
    icg.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    icg.add_argument("--resolution", type=resolution_type, default=DEFAULT_RESOLUTION, metavar="PX",
                     help=f"image side of the written dataset in pixels (default {DEFAULT_RESOLUTION})")
    icg.set_defaults(handler=cmd_data_build_icg)
