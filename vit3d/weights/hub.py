"""Checkpoints named on the Hugging Face Hub: ``hf-hub:org/name[@revision]``, or a bare ``org/name[@revision]``
when no local path of that name exists (timm's and transformers' spellings).

Files come through :mod:`huggingface_hub` (``hf_hub_download``), so its cache (``HF_HOME`` / ``HF_HUB_CACHE``),
offline mode (``HF_HUB_OFFLINE=1``: the cache only, no request), endpoint (``HF_ENDPOINT``), token and revision
pinning all apply. ``config.json`` is fetched when the repository has one; for weights ``model.safetensors``
(or a sharded safetensors index) is preferred over ``pytorch_model.bin``, which is read with the same refusal of
code-running pickles as a local file. Nothing else is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vit3d.errors import CheckpointError

__all__ = ["HUB_PREFIX", "HubName", "download", "parse_hub_name"]

HUB_PREFIX = "hf-hub:"
# In order of preference: safetensors (no code, memory-mapped) before the pickle-based format.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# A local-looking name (a weights suffix) is never sent to the Hub: a typo'd path should say "does not exist".
_LOCAL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar", ".npz", ".json")
_REPO = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")
_FIX = ("pass a local checkpoint file or folder instead, or fetch it where there is network (`hf download "
        "{repo}`, or any vit3d load) and set HF_HUB_OFFLINE=1 to read huggingface_hub's cache")


@dataclass(frozen=True)
class HubName:
    """A Hub repository and the revision to read (a branch, tag or commit; ``None`` is ``main``)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HUB_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_name(source: str | Path) -> HubName | None:
    """The :class:`HubName` that ``source`` spells, or ``None`` for a local path.

    ``hf-hub:org/name[@rev]`` is always a Hub name (an invalid one raises :class:`CheckpointError`); a bare
    ``org/name[@rev]`` is one only when no such local path exists and it does not end in a weights suffix.
    """
    if isinstance(source, Path):
        return None
    text = str(source)
    if text.startswith(HUB_PREFIX):
        m = _REPO.match(text[len(HUB_PREFIX):])
        if m is None:
            raise CheckpointError(f"{text!r} is not a Hub name",
                                  fix="write hf-hub:org/name or hf-hub:org/name@revision")
        return HubName(m["repo"], m["rev"])
    m = _REPO.match(text)
    if m is None or text.lower().endswith(_LOCAL_SUFFIXES) or Path(text).expanduser().exists():
        return None
    return HubName(m["repo"], m["rev"])


def download(name: HubName) -> tuple[Path, list[str]]:
    """Fetch ``config.json`` (if the repository has one) and the preferred weights of ``name`` into the
    huggingface_hub cache; return the snapshot folder holding them and notes for the load report.

    Raises:
        CheckpointError: one line saying what failed (no network / offline and not cached, no such repository or
            revision, no weights file) and how to use a local file or the offline cache instead.
    """
    try:
        import huggingface_hub
        from huggingface_hub import errors as hub_errors
    except ImportError as err:
        raise CheckpointError(f"{name} names a Hugging Face Hub checkpoint but huggingface_hub is not installed",
                              fix="pip install huggingface_hub, or pass a local checkpoint file") from err

    unreachable: list[str] = []

    def fetch(filename: str) -> Path:
        # After one failed connection (huggingface_hub has already retried it with backoff), read the cache only:
        # trying each remaining file over the network again would multiply the wait before the same answer.
        from vit3d import __version__

        return Path(huggingface_hub.hf_hub_download(name.repo_id, filename, revision=name.revision,
                                                    local_files_only=bool(unreachable), library_name="vit3d",
                                                    library_version=__version__))

    try:
        try:
            fetch("config.json")
        except hub_errors.LocalEntryNotFoundError as err:  # offline and not cached, or no connection
            unreachable.append(_reason(err))
        except hub_errors.EntryNotFoundError:  # the repository has no config.json (timm repos may not)
            pass
        for filename in WEIGHT_FILES:
            try:
                path = fetch(filename)
            except hub_errors.LocalEntryNotFoundError as err:
                unreachable.append(_reason(err))
                continue
            except hub_errors.EntryNotFoundError:
                continue
            if filename.endswith(".index.json"):
                _fetch_shards(path, fetch)
            folder = path.parent
            notes = [f"from the Hugging Face Hub: {name.repo_id} at {name.revision or 'main'} "
                     f"(snapshot {folder.name}), {filename}"]
            return folder, notes
    except hub_errors.GatedRepoError as err:
        raise CheckpointError(f"{name} is gated on the Hugging Face Hub ({_reason(err)})", file=str(name),
                              fix="accept its terms on the Hub and log in (`hf auth login`), or pass a local "
                                  "file") from err
    except hub_errors.RepositoryNotFoundError as err:
        raise CheckpointError(f"no Hugging Face Hub repository {name.repo_id!r} (or it is private)", file=str(name),
                              fix="check the name (org/name), log in for a private one (`hf auth login`), or pass "
                                  "a local checkpoint path") from err
    except hub_errors.RevisionNotFoundError as err:
        raise CheckpointError(f"{name.repo_id!r} has no revision {name.revision!r}", file=str(name),
                              fix="use a branch, tag or commit of that repository") from err
    except hub_errors.HfHubHTTPError as err:
        raise CheckpointError(f"downloading {name} failed ({_reason(err)})", file=str(name),
                              fix=_FIX.format(repo=name.repo_id)) from err
    if unreachable:
        raise CheckpointError(f"downloading {name} failed and it is not in the huggingface_hub cache "
                              f"({unreachable[-1]})", file=str(name), fix=_FIX.format(repo=name.repo_id))
    raise CheckpointError(f"{name} holds none of {list(WEIGHT_FILES)}", file=str(name),
                          fix="point at a repository with ViT weights in one of those files, or download the "
                              "weights yourself and pass the local file")


def _fetch_shards(index: Path, fetch: Callable[[str], Path]) -> None:
    """Download every shard a sharded index lists, after checking each name stays inside the repository."""
    from .io import shard_names  # io imports this module

    for shard in shard_names(index):
        fetch(shard)


def _reason(err: BaseException) -> str:
    """First line of a huggingface_hub error, without its long help text."""
    text = " ".join(str(err).split("\n")[0].split())
    return text[:200] or type(err).__name__
