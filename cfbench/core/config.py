"""Settings: where data, weights, runs and caches live, the process heap policy, and where each value came from.

Precedence, highest first: command-line flag, environment variable, config file, built-in default.

- config file: ``$CFBENCH_CONFIG`` if set, else ``~/.config/cfbench/config.toml`` (flat ``key = "value"``).
- environment: ``CFBENCH_DATA_DIR``, ``CFBENCH_WEIGHTS_DIR``, ``CFBENCH_RUNS_DIR``, ``CFBENCH_CACHE_DIR``,
  ``CFBENCH_ALLOCATOR``, ``CFBENCH_IMAGE_CACHE_GB``.

``cfbench config`` prints the values in force with their sources; ``cfbench config set KEY VALUE``
writes the config file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cfbench.core.storage import atomic_write_text

SETTINGS: dict[str, str] = {
    "data_dir": "dataset folder in the MIMIC-EDIT-INSTRUCTION layout (instructions.csv, past/, current/)",
    "weights_dir": "folder holding one sub-folder of weights per model",
    "runs_dir": "where run folders are created when --out is not given",
    "cache_dir": "caches: the demo phantom set, evaluator outputs on real images",
    "image_cache_gb": "size bound of the decoded dataset images kept under cache_dir (GB; 0: none); later "
                      "evaluations of a split skip decoding its targets and priors",
    "allocator": "C heap policy of a cfbench process: keep-freed (reuse freed memory; CPU forwards run 1.3-1.7x "
                 "faster) or system (glibc's defaults); see cfbench/core/allocator.py",
}


NUMERIC_SETTINGS = ("image_cache_gb",)
PATH_SETTINGS = ("data_dir", "weights_dir", "runs_dir", "cache_dir")
ENVIRONMENT_NUMBERS: dict[str, tuple[int, int]] = {  # variables read outside SETTINGS: (default, minimum)
    "CFBENCH_MAX_IMAGE_PIXELS": (64_000_000, 1),
}


def environment_int(name: str) -> int:
    """A whole-number environment variable of :data:`ENVIRONMENT_NUMBERS` (its default when unset);
    ConfigError naming the variable when it is not a whole number >= its minimum."""
    default, minimum = ENVIRONMENT_NUMBERS[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"environment variable {name}: expected a whole number >= {minimum}, got {text!r}")
    return value


def check_settings() -> None:
    """Every setting in force (flags aside) and every numeric environment variable, checked once before any
    work: ConfigError naming the variable or the config file key."""
    for key in PATH_SETTINGS:
        setting = resolve(key)
        if setting.value is not None and setting.source != "default":
            try:
                check_path_value(key, setting.value)
            except ConfigError as error:
                raise ConfigError(f"setting {error} ({setting.source})") from None
    for key in NUMERIC_SETTINGS:
        non_negative_number(key)
    for name in ENVIRONMENT_NUMBERS:
        environment_int(name)


def non_negative_number(key: str) -> float:
    """A numeric setting's value; ConfigError naming where it came from when it is not a number >= 0 (NaN too)."""
    setting = resolve(key)
    try:
        value = float(setting.value)
    except (TypeError, ValueError):
        value = -1.0
    if not value >= 0.0:
        raise ConfigError(f"setting {key} ({setting.source}): expected a number >= 0, got {setting.value!r}")
    return value


# Files shipped inside the package (the phantom evaluator, and the phantom generator when present).
PACKAGE_DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def _default(key: str) -> str | None:
    home = Path.home()
    cache = Path(os.environ.get("XDG_CACHE_HOME", home / ".cache")) / "cfbench"
    return {
        "data_dir": None,
        "weights_dir": str(home / "cfbench-weights"),
        "runs_dir": str(Path.cwd() / "runs"),
        "cache_dir": str(cache),
        "image_cache_gb": "8",
        "allocator": "keep-freed",
    }[key]


def env_name(key: str) -> str:
    return f"CFBENCH_{key.upper()}"


def config_file_path() -> Path:
    explicit = os.environ.get("CFBENCH_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "cfbench" / "config.toml"


@dataclass(frozen=True)
class Setting:
    key: str
    value: str | None
    source: str  # "flag", "env CFBENCH_X", "file PATH", "default"


class ConfigError(ValueError):
    pass


def _read_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {unknown}; known keys: {sorted(SETTINGS)}")
    for key, value in data.items():
        numeric = key in NUMERIC_SETTINGS and isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (isinstance(value, str) or numeric):
            expected = "a number or a quoted string" if key in NUMERIC_SETTINGS else "a quoted string"
            raise ConfigError(f"config file {path}: key {key} must be {expected}, got {type(value).__name__} "
                              f"{value!r} (e.g. {key} = \"...\")")
    return {key: str(value) for key, value in data.items()}


def resolve(key: str, flag_value: str | os.PathLike | None = None) -> Setting:
    """The value of one setting and where it came from."""
    if key not in SETTINGS:
        raise ConfigError(f"unknown setting {key!r}; known: {sorted(SETTINGS)}")
    if flag_value is not None:
        return Setting(key, str(flag_value), "flag")
    env_value = os.environ.get(env_name(key))
    if env_value:
        return Setting(key, env_value, f"env {env_name(key)}")
    path = config_file_path()
    file_values = _read_file(path)
    if key in file_values:
        return Setting(key, file_values[key], f"file {path}")
    return Setting(key, _default(key), "default")


def resolve_path(key: str, flag_value: str | os.PathLike | None = None) -> Path | None:
    setting = resolve(key, flag_value)
    return Path(setting.value).expanduser() if setting.value else None


def all_settings() -> list[Setting]:
    return [resolve(key) for key in SETTINGS]


def set_value(key: str, value: str) -> Path:
    """Write ``key = value`` into the config file (other keys kept); returns the file's path."""
    if key not in SETTINGS:
        raise ConfigError(f"unknown setting {key!r}; known: {sorted(SETTINGS)}")
    value = check_path_value(key, value)
    path = config_file_path()
    values = _read_file(path)
    values[key] = value
    text = "".join(f"{name} = {_toml_string(values[name])}\n" for name in sorted(values))
    if {name: str(v) for name, v in tomllib.loads(text).items()} != values:  # the file must read back as written
        raise ConfigError(f"cannot write {key} = {value!r} as TOML")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def check_path_value(key: str, value: str) -> str:
    """Every setting is a folder path: one line of printable text, no control characters."""
    if not value.strip():
        raise ConfigError(f"{key}: the value is empty; give a folder path")
    bad = sorted({repr(c) for c in value if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise ConfigError(f"{key}: a folder path cannot contain control characters ({', '.join(bad)})")
    return value


def _toml_string(value: str) -> str:
    """A TOML basic string: backslash and quote escaped (control characters are refused before)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
