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


def add_verbs(verbs) -> None:
    """The ``phantom`` verb group."""
    phantom_verb = verbs.add_parser("phantom", help="phantom-suite tools")
    phantom_verbs = phantom_verb.add_subparsers(dest="phantom_verb", required=True, metavar="JOB")
    train = phantom_verbs.add_parser(
        "train-evaluators", help="train the phantom evaluator CNNs (findings, group, sex, age) on rendered phantoms")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for the weights and the held-out scores")
    train.add_argument("--n-train", type=positive_int, default=7000, metavar="N", help="phantoms rendered for training")
    train.add_argument("--n-val", type=positive_int, default=1000, metavar="N",
                       help="held-out phantoms the reported AUROC / r are measured on")
    train.add_argument("--epochs", type=positive_int, default=6, metavar="E", help="passes over the training phantoms")
    train.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the phantoms and the training")
    train.add_argument("--resolution", type=resolution_type, default=256, metavar="PX",
                       help="side the phantoms are rendered at before the resize to the network input (default 256)")
    train.add_argument("--workers", type=positive_int, default=2, help="rendering processes")
    train.set_defaults(handler=cmd_phantom_train)

