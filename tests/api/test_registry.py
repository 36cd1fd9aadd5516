import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cfbench.api.model import CounterfactualModel
from cfbench.api.registry import (
    PluginError,
    UnknownModelError,
    available_models,
    broken_plugins,
    get_model_class,
    register,
    resolve_model_path,
)
from cfbench.core.errors import WeightsNotFoundError

EXAMPLE_PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "cfbench-example-plugin"


def test_builtins_are_registered():
    models = available_models()
    for name in ("identity", "ground-truth", "true-counterfactual"):
        assert models[name].origin == "built-in"
        assert models[name].model_class.name == name


def test_import_path_and_unknown_names():
    from tests.helpers.fake_models import NoisyEditModel

    assert get_model_class("tests.helpers.fake_models:NoisyEditModel") is NoisyEditModel
    with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'. Available: .*identity"):
        get_model_class("no-such-model")
    with pytest.raises(UnknownModelError, match="cannot import model class 'tests.helpers.fake_models:Missing'"):
        get_model_class("tests.helpers.fake_models:Missing")
    with pytest.raises(PluginError, match="not a subclass of cfbench.CounterfactualModel"):
        get_model_class("pathlib:Path")


def test_register_rejects_nameless_and_duplicate_classes():
    class Nameless(CounterfactualModel):
        pass

    with pytest.raises(PluginError, match="has no `name`"):
        register(Nameless)

    class Impostor(CounterfactualModel):
        name = "identity"

    with pytest.raises(ValueError, match="registered twice"):
        register(Impostor)


def test_missing_weights_error_names_path_and_how(tmp_path, monkeypatch):
    class NeedsWeights(CounterfactualModel):
        name = "needs-weights"
        weights_subdir = "needs-weights-v1"
        weights_help = "Download them from the authors' release."

    monkeypatch.setenv("CFBENCH_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as raised:
        resolve_model_path(NeedsWeights, None)
    message = str(raised.value)
    assert str(tmp_path / "needs-weights-v1") in message and "authors' release" in message
    (tmp_path / "needs-weights-v1").mkdir()
    assert resolve_model_path(NeedsWeights, None) == tmp_path / "needs-weights-v1"
    assert resolve_model_path(IdentityLike, None) is None


class IdentityLike(CounterfactualModel):
    name = "identity-like"


def test_entry_point_plugin_installed_from_a_package(tmp_path):
    """Build and install the example plugin into a folder, then let a fresh process discover it."""
    target = tmp_path / "site"
    source = tmp_path / "plugin"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(EXAMPLE_PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    listing = subprocess.run([sys.executable, "-m", "cfbench.cli", "models"], env=env,
                             capture_output=True, text=True, check=True)
    assert "example-opacity" in listing.stdout
    assert "plugin cfbench-example-plugin" in listing.stdout
    assert "guidance_map" in listing.stdout.split("example-opacity", 1)[1].splitlines()[0]
    # and it runs end to end through the registry in that process
    code = ("import numpy as np; from cfbench.api.registry import get_model_class; from cfbench import *;"
            "cls = get_model_class('example-opacity'); m = cls.load(LoadContext());"
            "from cfbench.core.findings import parse_instruction as p;"
            "r = m.edit([EditRequest('a', np.full((64, 64), .5, np.float32), 'Add the finding of left pleural effusion',"
            " p('Add the finding of left pleural effusion'))])[0];"
            "validate_result(r, EditRequest('a', np.zeros((64, 64), np.float32), ''), 'x');"
            "print(round(float(r.image[50, 48] - .5), 3), round(float(r.image[50, 16] - .5), 3))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    left_side_change, right_side_change = map(float, out.stdout.split())
    assert left_side_change > 0.1 and right_side_change < 0.01  # patient left = image right


def test_example_plugin_validates_its_options_like_built_ins(monkeypatch):
    """The example adapter builds its options with ModelOptions: unknown keys and out-of-range values raise
    ValueError naming the option, as built-in adapters do."""
    import importlib.util

    from cfbench import LoadContext

    spec = importlib.util.spec_from_file_location(
        "example_plugin_model", EXAMPLE_PLUGIN / "cfbench_example" / "model.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    model_class = module.GaussianOpacityModel
    assert model_class.load(LoadContext(options={"strength": "0.3"})).strength == 0.3
    with pytest.raises(ValueError, match="strength must lie in"):
        model_class.load(LoadContext(options={"strength": "2"}))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['strenght'\]"):
        model_class.load(LoadContext(options={"strenght": "0.3"}))
    with pytest.raises(ValueError, match="option strength='strong'"):
        model_class.load(LoadContext(options={"strength": "strong"}))


def _fake_entry_points(monkeypatch, points):
    """Replace the installed entry points with ``points`` (name, value) for this test, read afresh."""
    from importlib.metadata import EntryPoint

    from cfbench.api import registry

    made = [EntryPoint(name, value, registry.ENTRY_POINT_GROUP) for name, value in points]
    monkeypatch.setattr(registry, "entry_points", lambda group: [p for p in made if p.group == group])
    registry.reload_plugins()
    monkeypatch.setattr(registry, "_PLUGINS", None)  # and forget them again after the test


def test_broken_plugin_changes_nothing_for_commands_that_do_not_name_it(monkeypatch, capsys):
    from cfbench.api import registry
    from cfbench.cli import main

    _fake_entry_points(monkeypatch, [
        ("broken-model", "no_such_module_for_cfbench.adapter:Model"),
        ("noisy-plugin", "tests.helpers.fake_models:NoisyEditModel"),
        ("identity", "tests.helpers.fake_models:NoisyEditModel"),  # clashes with a built-in
    ])
    calls = []
    real_read = registry._read_plugins
    monkeypatch.setattr(registry, "_read_plugins", lambda: calls.append(1) or real_read())
    with pytest.warns(registry.PluginWarning) as warned:
        models = available_models()
    assert sorted(str(w.message).split("'")[1] for w in warned) == ["broken-model", "identity"]
    assert "broken-model" not in models and models["identity"].origin == "built-in"
    assert models["noisy-plugin"].origin == "plugin unknown package"
    get_model_class("identity"), get_model_class("noisy-plugin"), available_models()
    assert calls == [1]  # read once per process, warned once
    with pytest.raises(PluginError, match=r"'broken-model' .*failed to load .*ModuleNotFoundError.*no_such_module"):
        get_model_class("broken-model")
    broken = broken_plugins()
    assert set(broken) == {"broken-model", "identity"} and "clashes with a built-in" in broken["identity"].error

    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    line = next(row for row in listing.splitlines() if row.startswith("broken-model"))
    assert "BROKEN" in line and "ModuleNotFoundError" in line
    assert main(["run", "--model", "broken-model", "--split", "demo"]) == 2
    assert "failed to load" in capsys.readouterr().err
