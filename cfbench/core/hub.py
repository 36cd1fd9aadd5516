"""Generator weights from the Hugging Face hub, through huggingface_hub's own local cache.

``hf:ORG/NAME[@REVISION]`` names a hub repository (REVISION: a branch, tag or commit; default ``main``).
:func:`resolve_hub_path` finds its snapshot folder in the local cache **without any network access**
(``local_files_only``), so a run never downloads; :func:`download_snapshot` is the one function that does, used
only by ``cfbench weights fetch MODEL`` (gated repositories need ``hf auth login`` and accepted terms).

The cache is huggingface_hub's: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``,
read when called (``models--ORG--NAME/refs/REVISION`` holds the commit, ``snapshots/COMMIT/`` the files).
huggingface_hub is imported inside the functions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PREFIX = "hf:"
_SPEC = re.compile(r"^hf:(?P<repo>[^@]*)(?:@(?P<revision>.*))?$")
_REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")  # the hub's rules for org and name
_REF_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # one component of a branch or tag name
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _repo_problem(repo: str) -> str | None:
    parts = repo.split("/")
    if len(parts) != 2:
        return "the repository must be ORG/NAME"
    for part in parts:
        if not _REPO_PART.match(part) or "--" in part or ".." in part:
            return (f"{part!r} is not a valid organisation or repository name (letters, digits, '-', '_', '.'; no "
                    "'--' or '..'; at most 96 characters)")
    return None


def _revision_problem(revision: str) -> str | None:
    if _COMMIT.match(revision):
        return None
    parts = revision.split("/")
    if (len(revision) > 255 or ".." in revision or revision.endswith(".lock")
            or not all(_REF_PART.match(part) for part in parts)):
        return (f"revision {revision!r} is not a branch, tag or 40-hex commit (letters, digits, '-', '_', '.', '/'; "
                "no '..', no component starting with '.')")
    return None


class HubSpecError(ValueError):
    """A malformed ``hf:ORG/NAME[@REVISION]``."""


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}" + ("" if self.revision == "main" else f"@{self.revision}")


def is_hub_spec(text: str | os.PathLike | None) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


def parse_hub_spec(text: str) -> HubSpec:
    """``hf:ORG/NAME[@REVISION]`` checked (valid repository id; branch, tag or 40-hex commit; nothing that could
    name a path outside the hub cache), else HubSpecError naming the problem."""
    match = _SPEC.match(text.strip())
    problem = "not of the form hf:ORG/NAME or hf:ORG/NAME@REVISION" if match is None else (
        _repo_problem(match["repo"]) or (None if match["revision"] is None else _revision_problem(match["revision"])))
    if problem:
        raise HubSpecError(f"{text!r}: {problem}")
    return HubSpec(match["repo"], match["revision"] or "main")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder as the environment sets it now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def cached_repo_folder(spec: HubSpec) -> Path:
    """Where huggingface_hub keeps the repository (whether or not it is there)."""
    return hub_cache_dir() / ("models--" + spec.repo_id.replace("/", "--"))


def resolve_hub_path(spec: HubSpec | str) -> Path | None:
    """The local snapshot folder of ``spec`` from the cache, or None when it is not cached. Never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    spec = parse_hub_spec(spec) if isinstance(spec, str) else spec
    try:
        found = Path(snapshot_download(spec.repo_id, revision=spec.revision, cache_dir=hub_cache_dir(),
                                       local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    if not found.resolve().is_relative_to(cached_repo_folder(spec).resolve()):
        raise HubSpecError(f"{spec}: the cache resolves it to {found}, outside its repository's cache folder")
    return found


def download_snapshot(spec: HubSpec | str, progress: bool = True) -> Path:
    """Download (or complete) ``spec`` into the cache and return its snapshot folder. Honours
    ``HF_HUB_OFFLINE=1`` (then it only resolves what is cached, raising when absent)."""
    from huggingface_hub import snapshot_download

    spec = parse_hub_spec(spec) if isinstance(spec, str) else spec
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not progress:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return Path(snapshot_download(spec.repo_id, revision=spec.revision, cache_dir=hub_cache_dir(),
                                  local_files_only=offline))
