"""The weights manager: which weight files cfbench needs, where each must lie, and fetching them.

The catalogue below is data: one :class:`WeightsFile` per file, naming its key, file name, release URL,
the folder it must be placed in and what uses it. Evaluators (and, later, generator adapters) never
download anything themselves: they call :func:`require` which returns the exact path or raises
:class:`~cfbench.core.errors.WeightsNotFoundError` naming that path, the URL and the ``cfbench weights fetch KEY`` command.
``cfbench weights`` shows :func:`weights_status`; ``cfbench weights fetch`` calls :func:`fetch`.

Folders (``WeightsFile.folder``):

- ``"xrv"``: torchxrayvision's cache, ``~/.torchxrayvision/models_data/`` under the *current* ``$HOME``
  (torchxrayvision reads no environment variable). The race, age and sex models read only this folder.
- ``"xrv-cache"``: the same folder by default, but the caller may pass another ``cache_dir`` (the
  torchxrayvision DenseNet accepts ``cache_dir=``).
- ``"weights_dir/SUB"``: ``SUB`` inside cfbench's ``weights_dir`` setting (for generator adapters).

Expected SHA-256 digests can be recorded in ``WeightsFile.sha256``; when set, :func:`fetch` and
:func:`weights_status` check them. None are recorded for the torchxrayvision files yet (they were not
available where this module was written); ``cfbench weights`` prints the digests of the files present so
they can be pinned here.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cfbench.core.errors import MissingWeights, WeightsNotFoundError
from cfbench.core.hashing import cached_sha256, file_sha256
from cfbench.evaluation.weights_trust import trust

XRV_RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"



@dataclass(frozen=True)
class WeightsFile:
    """One weights file: where it comes from and where it must lie."""

    key: str  # catalogue key, e.g. "xrv-race"
    filename: str  # file name on disk (for torchxrayvision: the basename of the release URL)
    url: str
    folder: str  # "xrv", "xrv-cache" or "weights_dir/SUB"
    used_by: str  # what loads it (class names)
    description: str = ""
    default: bool = True  # needed by the default evaluators (others are listed only when asked or present)
    sha256: str | None = None  # expected digest, when known
    xrv_weights: str | None = None  # torchxrayvision weights name (DenseNet(weights=...)), when it has one


def _xrv(key, filename, used_by, description, default=True, xrv_weights=None, folder="xrv") -> WeightsFile:
    return WeightsFile(key=key, filename=filename, url=XRV_RELEASE + filename, folder=folder, used_by=used_by,
                       description=description, default=default, xrv_weights=xrv_weights)


_DENSENET_SUFFIX = "-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
_DENSENET_USER = "cfbench.evaluation.xrv.XRVPathologyEvaluator (torchxrayvision.models.DenseNet)"

# The catalogue. File names are the basenames of the URLs torchxrayvision 1.5.7 downloads from
# (models.model_urls[...]["weights_url"] and the `url` in baseline_models/{emory_hiti,riken,mira});
# tests/test_weights.py checks that they agree with the installed torchxrayvision.
CATALOGUE: dict[str, WeightsFile] = {entry.key: entry for entry in (
    _xrv("xrv-densenet121-all", "nih-pc-chex-mimic_ch-google-openi-kaggle" + _DENSENET_SUFFIX, _DENSENET_USER,
         "DenseNet-121, 224 px, trained on all datasets: pathology probabilities and FID features",
         xrv_weights="densenet121-res224-all", folder="xrv-cache"),
    _xrv("xrv-race", "resnet_race_detection_val-loss_0.157_mimic_public.pt",
         "cfbench.evaluation.xrv.XRVRaceEvaluator (torchxrayvision.baseline_models.emory_hiti.RaceModel)",
         "Emory HITI ResNet-34, 320 px, race (Asian/Black/White), MIMIC-CXR"),
    _xrv("xrv-age", "baseline_models_riken_xray_age_every_model_age_senet154_v2_tl_26_ft_7_fp32.pt",
         "cfbench.evaluation.xrv.XRVAgeEvaluator (torchxrayvision.baseline_models.riken.AgeModel)",
         "RIKEN SENet-154 (TorchScript), 320 px, age in years, NIH"),
    _xrv("xrv-sex", "mira_sex_resnet-all_epoch_13-step_7125.ckpt",
         "cfbench.evaluation.xrv.XRVSexEvaluator (torchxrayvision.baseline_models.mira.SexModel)",
         "MIRA ResNet-34, 224 px, sex (Male/Female), CheXpert; optional (for data without race)",
         default=False),
    # Other torchxrayvision DenseNet weights, selectable with XRVPathologyEvaluator(weights=...).
    *(_xrv(f"xrv-densenet121-{name}", f"{prefix}{_DENSENET_SUFFIX}", _DENSENET_USER,
           f"DenseNet-121, 224 px, trained on {name}", default=False,
           xrv_weights=f"densenet121-res224-{name}", folder="xrv-cache")
      for name, prefix in (("nih", "nih"), ("pc", "pc"), ("chex", "chex"), ("rsna", "kaggle"),
                           ("mimic_nb", "mimic_nb"), ("mimic_ch", "mimic_ch"))),
)}


# The catalogue key each member of the torchxrayvision suite (cfbench.evaluation.xrv.MEMBER_CLASSES) loads with
# its default weights; tests/evaluation/test_preflight.py checks that they agree with the classes.
SUITE_MEMBER_KEYS: dict[str, str] = {"pathology": "xrv-densenet121-all", "race": "xrv-race", "age": "xrv-age",
                                     "sex": "xrv-sex"}


def suite_members(has_race: bool, include_sex: bool | None = None) -> tuple[str, ...]:
    """Suite members for a dataset: race only where the data records it; sex by default where it does not."""
    members = ["pathology", "race", "age"] if has_race else ["pathology", "age"]
    if include_sex if include_sex is not None else not has_race:
        members.append("sex")
    return tuple(members)


def missing_weights_error(missing: Iterable[tuple[WeightsFile, Path]]) -> WeightsNotFoundError:
    """The error for catalogue files that are absent: each path and URL, and one fetch command for all."""
    missing = list(missing)
    items = [MissingWeights(f"weights file for {entry.key!r} ({entry.description or entry.used_by})", Path(path),
                            f"download it from: {entry.url}") for entry, path in missing]
    keys = " ".join(entry.key for entry, _ in missing)
    return WeightsNotFoundError(items, f"or run: cfbench weights fetch {keys}\n"
                                       "(cfbench never downloads weights while evaluating)")

    def __reduce__(self):
        return (type(self), (self.entry, self.path, self.missing[1:]))


def register(entry: WeightsFile, replace_existing: bool = False) -> WeightsFile:
    """Add a file to the catalogue (generator adapters register theirs on import)."""
    if entry.key in CATALOGUE and not replace_existing and CATALOGUE[entry.key] != entry:
        raise ValueError(f"weights key {entry.key!r} is already in the catalogue")
    if not (entry.folder in ("xrv", "xrv-cache") or entry.folder.startswith("weights_dir/")):
        raise ValueError(f"{entry.key}: folder must be 'xrv', 'xrv-cache' or 'weights_dir/SUB', got {entry.folder!r}")
    CATALOGUE[entry.key] = entry
    return entry


def get(key: str) -> WeightsFile:
    try:
        return CATALOGUE[key]
    except KeyError:
        raise KeyError(f"unknown weights {key!r}; known: {sorted(CATALOGUE)}") from None


def key_for_xrv_weights(xrv_weights: str) -> str:
    """The catalogue key of a torchxrayvision DenseNet weights name ("densenet121-res224-all")."""
    for entry in CATALOGUE.values():
        if entry.xrv_weights == xrv_weights:
            return entry.key
    known = sorted(entry.xrv_weights for entry in CATALOGUE.values() if entry.xrv_weights)
    raise KeyError(f"torchxrayvision weights {xrv_weights!r} are not in cfbench's catalogue; known: {known}")


def xrv_cache_dir() -> Path:
    """torchxrayvision's cache folder under the current $HOME (what its loaders compute, at call time)."""
    return Path(os.path.expanduser(os.path.join("~", ".torchxrayvision", "models_data")))


def folder_for(entry: WeightsFile, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder the file must lie in. ``cache_dir`` only applies to ``xrv-cache`` files."""
    if entry.folder == "xrv":
        return xrv_cache_dir()
    if entry.folder == "xrv-cache":
        return Path(cache_dir).expanduser() if cache_dir is not None else xrv_cache_dir()
    from cfbench.core.config import resolve_path

    return resolve_path("weights_dir") / entry.folder.split("/", 1)[1]


def path_for(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    entry = get(key)
    return folder_for(entry, cache_dir) / entry.filename


def require(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The path of a weights file that is present; WeightsNotFoundError (naming path, URL, command) otherwise."""
    entry = get(key)
    path = folder_for(entry, cache_dir) / entry.filename
    if not path.is_file():
        raise missing_weights_error([(entry, path)])
    return path


def require_all(keys: Iterable[str], cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Like :func:`require` for several files; one WeightsNotFoundError listing every missing file."""
    found, missing = {}, []
    for key in keys:
        entry = get(key)
        path = folder_for(entry, cache_dir) / entry.filename
        if path.is_file():
            found[key] = path
        else:
            missing.append((entry, path))
    if missing:
        raise missing_weights_error(missing)
    return found


# --------------------------------------------------------------------------------------------- hashes



# --------------------------------------------------------------------------------------------- status

@dataclass(frozen=True)
class WeightsStatus:
    key: str
    path: Path
    present: bool
    size: int | None  # bytes, when present
    sha256: str | None  # when present
    url: str
    used_by: str
    default: bool
    expected_sha256: str | None = None

    @property
    def verified(self) -> bool | None:
        """True/False when an expected digest is recorded and the file is present; None otherwise."""
        if self.expected_sha256 is None or self.sha256 is None:
            return None
        return self.sha256 == self.expected_sha256

    def to_dict(self) -> dict:
        return {"key": self.key, "path": str(self.path), "present": self.present, "size": self.size,
                "sha256": self.sha256, "url": self.url, "used_by": self.used_by, "default": self.default,
                "expected_sha256": self.expected_sha256, "verified": self.verified}


def weights_status(keys: Iterable[str] | None = None, cache_dir: str | os.PathLike | None = None,
                   hashes: bool = True, include_optional: bool = True) -> list[WeightsStatus]:
    """One row per catalogue file (or per given key): path, present, size and SHA-256 when present, URL.

    With ``include_optional=False`` (and no keys) only the files the default evaluators need and
    files already present are listed.
    """
    rows = []
    for key in (list(keys) if keys is not None else list(CATALOGUE)):
        entry = get(key)
        path = folder_for(entry, cache_dir) / entry.filename
        present = path.is_file()
        if keys is None and not include_optional and not entry.default and not present:
            continue
        rows.append(WeightsStatus(
            key=entry.key, path=path, present=present, size=path.stat().st_size if present else None,
            sha256=cached_sha256(path) if (present and hashes) else None, url=entry.url,
            used_by=entry.used_by, default=entry.default, expected_sha256=entry.sha256,
        ))
    return rows


def weights_table(rows: list[WeightsStatus] | None = None) -> str:
    """``cfbench weights`` output: a fixed-width table of :func:`weights_status`, then the missing files' URLs."""
    from cfbench.evaluation.weights_trust import trusted_record

    rows = weights_status(include_optional=False) if rows is None else rows
    width = max([len("key")] + [len(row.key) for row in rows]) + 1
    lines = [f"{'key':<{width}} {'present':<8} {'size (bytes)':>14}  {'sha256':<16}  {'expected sha256':<28}  path"]
    for row in rows:
        record = trusted_record(row.path) or {}
        if row.size is not None:
            size = f"{row.size:,}"
        else:
            size = f"{record['size']:,} exp." if record.get("size") else "unknown"
        digest = row.sha256[:16] if row.sha256 else "not present"
        if row.expected_sha256:
            expected = f"{row.expected_sha256[:16]} (catalogue)"
        elif record.get("sha256"):
            expected = f"{record['sha256'][:16]} (trusted)"
        else:
            expected = "unknown (trust on first use)"
        flag = "yes" if row.present else "MISSING"
        if row.verified is False:
            flag = "BAD-HASH"
        lines.append(f"{row.key:<{width}} {flag:<8} {size:>14}  {digest:<16}  {expected:<28}  {row.path}")
    missing = [row for row in rows if not row.present]
    if missing:
        lines.append("")
        lines.append("missing files: `cfbench weights fetch " + " ".join(row.key for row in missing)
                     + "` or download by hand:")
        lines.extend(f"  {row.url}\n    -> {row.path}" for row in missing)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- fetch

class FetchError(RuntimeError):
    pass


def _download(url: str, target: Path, expected_sha256: str | None, progress: bool) -> str:
    """url -> temporary file beside target -> fsync -> verify -> rename. Returns the SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as stream, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 20):
                stream.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    share = f" {100 * done / total:5.1f}%" if total else ""
                    sys.stderr.write(f"\r  {target.name}: {done / 1e6:8.1f} MB{share}")
                    sys.stderr.flush()
            stream.flush()
            os.fsync(stream.fileno())
        if progress:
            sys.stderr.write("\n")
        if total and done != total:
            raise FetchError(f"{url}: received {done} bytes, expected {total}")
        sha = digest.hexdigest()
        if expected_sha256 is not None and sha != expected_sha256:
            raise FetchError(f"{url}: SHA-256 {sha} does not match the catalogue's {expected_sha256}")
        os.replace(temporary, target)
        return sha
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fetch(keys: Iterable[str] | None = None, progress: bool = True, force: bool = False,
          cache_dir: str | os.PathLike | None = None) -> list[WeightsStatus]:
    """Download catalogue files (default: those the default evaluators need) to their exact paths.

    Files already present are skipped unless ``force``. Each download goes to a temporary file in the
    target folder and is renamed into place only when complete (and, when the catalogue records one,
    when its SHA-256 matches), so an interrupted fetch never leaves a partial file at the path.
    """
    keys = [key for key, entry in CATALOGUE.items() if entry.default] if keys is None else list(keys)
    entries = [get(key) for key in keys]  # unknown keys fail before anything is downloaded
    for entry in entries:
        target = folder_for(entry, cache_dir) / entry.filename
        if target.is_file() and not force:
            if progress:
                sys.stderr.write(f"{entry.key}: present at {target}\n")
            continue
        if progress:
            sys.stderr.write(f"{entry.key}: {entry.url}\n  -> {target}\n")
        try:
            digest = _download(entry.url, target, entry.sha256, progress)
            trust(target, digest)  # later loads are checked against what was fetched
        except FetchError:
            raise
        except Exception as error:  # noqa: BLE001 - re-raised with the manual instructions
            raise FetchError(f"could not download {entry.key} from {entry.url}: {error}\n"
                             f"download it by hand and place it at {target}") from error
    return weights_status(keys, cache_dir=cache_dir)


__all__ = [
    "CATALOGUE", "FetchError", "WeightsNotFoundError", "missing_weights_error", "WeightsFile", "WeightsStatus", "XRV_RELEASE",
    "cached_sha256", "fetch", "file_sha256", "folder_for", "get", "key_for_xrv_weights", "path_for",
    "register", "require", "require_all", "weights_status", "weights_table", "xrv_cache_dir",
]
