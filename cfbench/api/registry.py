"""The model registry: names -> CounterfactualModel classes.

Three ways in:

1. Built-in adapters in ``cfbench.models`` use the :func:`register` decorator.
2. Other packages declare an entry point in the group ``cfbench.models``::

       [project.entry-points."cfbench.models"]
       my-model = "my_package.adapter:MyModel"

   The entry point's name is the registry name; it must load a CounterfactualModel subclass.
3. For quick experiments, ``--model my_package.adapter:MyModel`` imports a class by path.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from cfbench.api.model import CounterfactualModel
from cfbench.core.config import PACKAGE_DATA_DIR, resolve_path
from cfbench.core.errors import MissingWeights, WeightsNotFoundError

ENTRY_POINT_GROUP = "cfbench.models"

_BUILTIN: dict[str, type[CounterfactualModel]] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class PluginError(RuntimeError):
    pass


def register(cls: type[CounterfactualModel]) -> type[CounterfactualModel]:
    """Class decorator registering a built-in model under ``cls.name``."""
    _check_model_class(cls, origin=f"{cls.__module__}.{cls.__qualname__}")
    if cls.name in _BUILTIN and _BUILTIN[cls.name] is not cls:
        raise ValueError(f"model name {cls.name!r} is registered twice")
    _BUILTIN[cls.name] = cls
    return cls


def _check_model_class(obj: object, origin: str) -> None:
    if not (isinstance(obj, type) and issubclass(obj, CounterfactualModel)):
        raise PluginError(f"{origin} is not a subclass of cfbench.CounterfactualModel")
    if not obj.name:
        raise PluginError(f"{origin} has no `name`")


def _load_builtins() -> None:
    importlib.import_module("cfbench.models")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_class: type[CounterfactualModel]
    origin: str  # "built-in", "plugin <distribution>", or "import path"


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that could not be used: listed by ``cfbench models``, an error only when asked for."""
    name: str
    origin: str  # "plugin <distribution>"
    value: str  # "module:Class" as the entry point declares it
    error: str  # one line: why it is unusable


class PluginWarning(UserWarning):
    """A plugin that cannot be used (warned once per process; the other models keep working)."""


_PLUGINS: tuple[dict[str, ModelEntry], dict[str, BrokenPlugin]] | None = None


def _read_plugins() -> tuple[dict[str, ModelEntry], dict[str, BrokenPlugin]]:
    entries: dict[str, ModelEntry] = {}
    broken: dict[str, BrokenPlugin] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        distribution = point.dist.name if point.dist is not None else "unknown package"
        origin = f"plugin {distribution}"
        try:
            loaded = point.load()
            _check_model_class(loaded, origin=f"entry point {point.name!r} ({point.value}) of {distribution}")
            if point.name in _BUILTIN:
                raise PluginError(f"plugin model {point.name!r} ({origin}) clashes with a built-in model name")
        except Exception as error:  # a broken plugin must not break the models that work
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            broken[point.name] = BrokenPlugin(point.name, origin, point.value,
                                              f"{type(error).__name__}: {message}")
            continue
        entries[point.name] = ModelEntry(point.name, loaded, origin)
    return entries, broken


def _plugins() -> tuple[dict[str, ModelEntry], dict[str, BrokenPlugin]]:
    """The entry points, read once per process (a plugin installed or broken while a long job runs changes
    nothing for that job); every broken one is warned about once, when they are first read."""
    global _PLUGINS
    if _PLUGINS is None:
        _load_builtins()
        _PLUGINS = _read_plugins()
        for plugin in _PLUGINS[1].values():
            warnings.warn(f"plugin {plugin.name!r} from {plugin.origin.removeprefix('plugin ')} is unusable "
                          f"({plugin.value}): {plugin.error}; the other models are unaffected",
                          PluginWarning, stacklevel=3)
    return _PLUGINS


def reload_plugins() -> None:
    """Forget the entry points read so far (the next lookup reads them again): for tests and long-lived
    sessions that install a plugin on purpose."""
    global _PLUGINS
    _PLUGINS = None


def available_models() -> dict[str, ModelEntry]:
    """Every usable registered model: built-ins first, then plugins (a plugin may not shadow a built-in).
    Plugins that failed to load are in :func:`broken_plugins`, not here."""
    _load_builtins()
    models = {name: ModelEntry(name, cls, "built-in") for name, cls in sorted(_BUILTIN.items())}
    for name, entry in sorted(_plugins()[0].items()):
        models[name] = entry
    return models


def broken_plugins() -> dict[str, BrokenPlugin]:
    """Entry points of the ``cfbench.models`` group that failed to import or are not models, by name."""
    return dict(sorted(_plugins()[1].items()))


def get_model_class(name: str) -> type[CounterfactualModel]:
    """The class registered as ``name``, or imported from ``module:Class``."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            loaded = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise UnknownModelError(f"cannot import model class {name!r}: {error}") from error
        _check_model_class(loaded, origin=name)
        return loaded
    models = available_models()
    broken = broken_plugins()
    if name in broken and name not in models:
        plugin = broken[name]
        raise PluginError(f"plugin {name!r} from {plugin.origin.removeprefix('plugin ')} failed to load "
                          f"({plugin.value}): {plugin.error}")
    if name not in models:
        raise UnknownModelError(
            f"unknown model {name!r}. Available: {', '.join(models) or 'none'}. "
            "Run `cfbench models` for details, or pass module:Class."
        )
    return models[name].model_class


def expected_weights_path(model_class: type[CounterfactualModel]) -> Path | None:
    """Where the model's weights are expected by default: ``{weights_dir}/{weights_subdir}``
    (None for models that need no weights)."""
    if model_class.weights_subdir is None:
        return None
    return resolve_path("weights_dir") / model_class.weights_subdir


def phantom_weights_path(model_class: type[CounterfactualModel]) -> Path | None:
    """The shipped phantom-trained weights of a model (``cfbench/data/{phantom_weights}``), when it has them."""
    if model_class.phantom_weights is None:
        return None
    path = PACKAGE_DATA_DIR / model_class.phantom_weights
    return path if path.exists() else None


def resolve_model_path(model_class: type[CounterfactualModel], model_path: str | Path | None,
                       dataset_kind: str | None = None) -> Path | None:
    """The weights path to use, checked to exist: the given one; else, on a phantom dataset
    (``dataset_kind == "phantom"``), the model's shipped phantom checkpoint when it has one; else
    ``{weights_dir}/{weights_subdir}``. ``hf:ORG/NAME[@REV]`` is looked up in huggingface_hub's local cache
    only (see :mod:`cfbench.core.hub`); nothing is downloaded."""
    from cfbench.core import hub

    if not model_path and dataset_kind == "phantom" and phantom_weights_path(model_class) is not None:
        return phantom_weights_path(model_class)
    if hub.is_hub_spec(model_path):
        spec = hub.parse_hub_spec(str(model_path))
        found = hub.resolve_hub_path(spec)
        if found is None:
            raise WeightsNotFoundError(MissingWeights(
                f"weights for model {model_class.name!r} ({spec})", hub.cached_repo_folder(spec),
                f"Not in the local Hugging Face cache. Run `cfbench weights fetch {model_class.name}` (or "
                f"`hf download {spec.repo_id}`, the CLI huggingface_hub installs) where a network exists, after accepting the "
                "repository's terms on huggingface.co; runs never download."))
        return found
    path = Path(model_path).expanduser() if model_path else expected_weights_path(model_class)
    if path is not None and not path.exists():
        how = model_class.weights_help or "See the model's documentation."
        if phantom_weights_path(model_class) is not None:
            how += (" (cfbench's own phantom-trained checkpoint is used on phantom datasets only, e.g. "
                    "--split demo; real data needs the real weights.)")
        raise WeightsNotFoundError(MissingWeights(
            f"weights for model {model_class.name!r}", path,
            f"{how} Then pass --model-path, or place them at {{weights_dir}}/{model_class.weights_subdir} "
            "(see `cfbench config`)."))
    return path
