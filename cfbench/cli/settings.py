"""Verbs about the installation: ``models`` (what is registered, weights present), ``config`` (settings
and where each comes from), ``weights`` (the evaluators' weights files: list, fetch)."""

from __future__ import annotations

import json

from cfbench.api.registry import available_models, broken_plugins, expected_weights_path, phantom_weights_path
from cfbench.cli.common import CliError, progress
from cfbench.core import config


def cmd_models(args) -> int:
    models = available_models()
    rows = []
    for name, entry in models.items():
        cls = entry.model_class
        caps = cls.capabilities
        weights = expected_weights_path(cls)
        rows.append({
            "name": name,
            "origin": entry.origin,
            "input": "edits the input image" if caps.edits_image else "does not edit the input",
            "guidance_map": caps.guidance_map,
            "explanation": caps.explanation,
            "oracle": getattr(caps, "oracle", False),
            "native_resolution": cls.native_resolution,
            "weights": str(weights) if weights else None,
            "weights_present": None if weights is None else weights.exists(),
            "phantom_checkpoint": str(phantom_weights_path(cls)) if phantom_weights_path(cls) else None,
            "description": cls.description,
        })
    broken = [{"name": plugin.name, "origin": plugin.origin, "broken": plugin.error, "entry_point": plugin.value}
              for plugin in broken_plugins().values()]
    if args.json:
        rows += broken
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(row["name"]) for row in rows + broken), default=0) + 2
    for row in rows:
        flags = [row["input"]] + [flag for flag in ("guidance_map", "explanation", "oracle") if row[flag]]
        if row["weights"] is None:
            weights = "no weights needed"
        else:
            weights = f"weights {'present' if row['weights_present'] else 'MISSING'} at {row['weights']}"
        if row["phantom_checkpoint"]:
            weights += "; on phantom splits: cfbench's phantom-trained checkpoint"
        print(f"{row['name']:<{width}}[{', '.join(flags)}] {row['native_resolution']} px, {row['origin']}; {weights}")
        if row["description"]:
            print(f"{'':<{width}}{row['description']}")
    for row in broken:
        print(f"{row['name']:<{width}}BROKEN ({row['origin']}, {row['entry_point']}): {row['broken']}")
        print(f"{'':<{width}}only commands that name this model fail; reinstall or fix the plugin")
    return 0


def cmd_config(args) -> int:
    if args.action == "set":
        if not args.key or args.value is None:
            raise CliError("usage: cfbench config set KEY VALUE")
        path = config.set_value(args.key, args.value)
        print(f"wrote {args.key} = {args.value} to {path}")
        return 0
    print(f"config file: {config.config_file_path()}")
    settings = list(config.all_settings())
    key_width = max(len(setting.key) for setting in settings)
    value_width = max(len(str(setting.value or "(unset)")) for setting in settings)
    for setting in settings:
        print(f"{setting.key:<{key_width}}  {str(setting.value or '(unset)'):<{value_width}}  from {setting.source}")
        print(f"{'':<{key_width}}  {config.SETTINGS[setting.key]}")
    return 0


def cmd_weights(args) -> int:
    from cfbench.evaluation import weights

    if args.action == "trust":
        from cfbench.evaluation.weights_trust import trust

        if not args.keys:
            raise CliError("usage: cfbench weights trust KEY [KEY ...] (keys as listed by `cfbench weights`)")
        for key in args.keys:
            try:
                path = weights.require(key, args.cache_dir)
            except KeyError as error:
                raise CliError(error.args[0]) from error
            print(f"trusted {key}: {path} (SHA-256 {trust(path)})")
        return 0
    if args.action == "fetch" and args.keys and args.keys[0] in available_models():
        return _fetch_model_weights(args.keys)
    if args.action == "fetch":
        keys = list(weights.CATALOGUE) if args.all else (args.keys or None)
        try:
            rows = weights.fetch(keys, progress=progress(args), force=args.force, cache_dir=args.cache_dir)
        except (weights.FetchError, KeyError) as error:
            raise CliError(error.args[0] if error.args else str(error)) from error
        print(weights.weights_table(rows))
        return 0
    if args.keys:
        raise CliError("keys are only taken by `cfbench weights fetch|trust KEY ...`")
    rows = weights.weights_status(include_optional=args.all, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        print(weights.weights_table(rows))
    return 0


def _fetch_model_weights(names: list[str]) -> int:
    """``cfbench weights fetch MODEL``: download a generator's hub repositories into the Hugging Face cache
    (gated ones need ``hf auth login`` and accepted terms); HF_HUB_OFFLINE=1 only checks the cache."""
    from cfbench.core import hub

    models = available_models()
    for name in names:
        if name not in models:
            raise CliError(f"unknown model {name!r}")
        repos = models[name].model_class.hub_repos
        if not repos:
            raise CliError(f"model {name!r} has no weights on the Hugging Face hub: "
                           f"{models[name].model_class.weights_help}")
        for repo in repos:
            try:
                folder = hub.download_snapshot(hub.HubSpec(repo))
            except Exception as error:  # network, gating, offline cache miss: say which repository
                raise CliError(f"could not fetch {repo} for {name}: {type(error).__name__}: {error}") from error
            print(f"{name}: {repo} -> {folder} (use --model-path hf:{repo})")
    return 0


def add_verbs(verbs) -> None:
    """The ``models``, ``weights`` and ``config`` verbs."""
    models = verbs.add_parser(
        "models", help="list registered models, their capabilities and weights",
        description="List every registered model (built-in adapters, entry-point plugins): what it returns "
                    "(edits the input or not, guidance map, explanation), its native resolution, where its "
                    "weights are expected ({weights_dir}/{its folder}, see `cfbench config`) and whether they are "
                    "there. --model-path overrides the folder for one run.")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=cmd_models)

    weights_parser = verbs.add_parser(
        "weights", help="list every weights file the evaluators need (path, size, SHA-256, present), or fetch them",
        description="The evaluators' weights files (torchxrayvision DenseNet, race, age; sex with --all): where each "
                    "is expected, whether it is present, its size and SHA-256 when present, and the expected "
                    "SHA-256 ('unknown' when cfbench records none: the first file used is then trusted and "
                    "checked afterwards). `fetch` downloads them (or a generator's hub repositories: `fetch "
                    "MODEL`); `trust` accepts the files now present. Nothing is downloaded during an evaluation.")
    weights_parser.add_argument("action", nargs="?", choices=["list", "fetch", "trust"], default="list",
                                help="list (default); fetch: download; trust: accept the files now present as the "
                                     "ones to load (their SHA-256 is recorded and checked at every load)")
    weights_parser.add_argument("keys", nargs="*", metavar="KEY",
                                help="catalogue keys to fetch or trust (fetch default: the defaults), or model names "
                                     "to fetch (generator weights from the Hugging Face hub into its cache)")
    weights_parser.add_argument("--all", action="store_true", help="include optional files")
    weights_parser.add_argument("--force", action="store_true", help="fetch again even if present")
    weights_parser.add_argument("--json", action="store_true", help="machine-readable listing")
    weights_parser.add_argument("--cache-dir", metavar="DIR", help="DenseNet cache folder (default torchxrayvision's)")
    weights_parser.set_defaults(handler=cmd_weights)

    conf = verbs.add_parser(
        "config", help="show settings and their sources, or `config set KEY VALUE`",
        description="Settings (data_dir, weights_dir, runs_dir, cache_dir) come from flags, then environment "
                    "variables (CFBENCH_DATA_DIR, ...), then the config file, then defaults. `cfbench config` shows "
                    "the value in force and where it came from; `cfbench config set KEY VALUE` writes the file.")
    conf.add_argument("action", nargs="?", choices=["show", "set"], default="show",
                      help="show the settings, or set one in the config file")
    conf.add_argument("key", nargs="?", choices=sorted(config.SETTINGS), help="setting to set")
    conf.add_argument("value", nargs="?", help="its new value (a folder)")
    conf.set_defaults(handler=cmd_config)

