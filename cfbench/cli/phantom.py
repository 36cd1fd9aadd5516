"""The ``phantom`` verb group: tools of the phantom suite (training its evaluator)."""

from __future__ import annotations

from cfbench.cli.common import positive_int, progress, resolution_type


def cmd_phantom_train(args) -> int:
    from cfbench.phantom.evaluator_training import train_phantom_evaluators

    record = train_phantom_evaluators(args.out, n_train=args.n_train, n_val=args.n_val, epochs=args.epochs,
                                      seed=args.seed, resolution=args.resolution, workers=args.workers,
                                      progress=progress(args))
    held_out = record["heldout"]
    print(f"wrote phantom_evaluator.safetensors and phantom_evaluator.json to {args.out}")
    print(f"held-out ({args.n_val} phantoms):")
    for finding, value in held_out["auroc"].items():
        print(f"  AUROC {finding:<18} {value:.4f}")
    print(f"  group AUROC              {held_out['group_auroc']:.4f}")
    print(f"  sex AUROC                {held_out['sex_auroc']:.4f}")
    print(f"  age Pearson r            {held_out['age_pearson']:.4f} (MAE {held_out['age_mae']:.2f} years)")
    print(f"  targets met: {held_out['targets_met']}")
    return 0 if held_out["targets_met"] else 1


def cmd_phantom_pseudo_masks(args) -> int:
    from cfbench.phantom.pseudo_masks import phantom_pseudo_masks

    masks = phantom_pseudo_masks(args.n_pairs, args.resolution, progress=progress(args))
    masks.save(args.out)
    share = ", ".join(f"{name} {mask.mean():.0%}" for name, mask in sorted(masks.masks.items()))
    print(f"wrote {args.out}: per-finding unions of true lesion masks over {args.n_pairs} training pairs "
          f"(share of the image: {share})")
    return 0


def add_verbs(verbs) -> None:
    """The ``phantom`` verb group."""
    phantom_verb = verbs.add_parser("phantom", help="phantom-suite tools")
    phantom_verbs = phantom_verb.add_subparsers(dest="phantom_verb", required=True, metavar="JOB")
    train = phantom_verbs.add_parser(
        "train-evaluators", help="train the phantom evaluator CNNs (findings, group, sex, age) on rendered phantoms")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for the weights and the held-out scores")
    train.add_argument("--n-train", type=int, default=7000)
    train.add_argument("--n-val", type=int, default=1000)
    train.add_argument("--epochs", type=int, default=6)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resolution", type=resolution_type, default=256, metavar="PX",
                       help="side the phantoms are rendered at before the resize to the network input (default 256)")
    train.add_argument("--workers", type=positive_int, default=2, help="rendering processes")
    train.set_defaults(handler=cmd_phantom_train)

    masks = phantom_verbs.add_parser(
        "pseudo-masks", help="per finding, the union of the true lesion masks of the phantom training stream",
        description="The phantom analogue of MS-CXR pseudo masks (used by InstructX2X's RSE on phantom data). "
                    "cfbench ships the result as cfbench/data/phantom_pseudo_masks.npz and copies it into every "
                    "phantom dataset as pseudo_masks.npz.")
    masks.add_argument("--out", required=True, metavar="FILE", help="output .npz")
    masks.add_argument("--n-pairs", type=positive_int, default=300, metavar="N",
                       help="training pairs to take the union over (default %(default)s)")
    masks.add_argument("--resolution", type=resolution_type, default=128, metavar="PX",
                       help="mask side in pixels (default %(default)s; masks are resized to each dataset)")
    masks.set_defaults(handler=cmd_phantom_pseudo_masks)

