"""Weights on the Hugging Face hub, fetched through huggingface_hub's cache as timm fetches its own.

`fetch` answers from the cache without asking the network; otherwise it downloads when the hub
answers, checks a large (LFS) file's sha256 against the hub's, and fails in seconds when offline,
naming the paths it looked at. HF_ENDPOINT, HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE act as they
do for huggingface_hub; EVOLVER_OFFLINE=1 also declares the machine offline.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evolver_common.downloads import offline_reason, reachable
from evolver_common.errors import BadInput

# The hub names an LFS file's blob by its sha256; a small git file's blob by its git sha1.
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubFile:
    """One file of a model repository on the hub: `repo` ('owner/name'), `filename`, at `revision`."""

    repo: str
    filename: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"hf-hub:{self.repo}/{self.filename}"

    def cached(self) -> Path | None:
        """The cache's copy, found without the network, or None."""
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo, self.filename, revision=self.revision)
        return Path(found) if isinstance(found, str) else None

    def cache_pattern(self) -> str:
        """Where the cache keeps this file (`*` for the commit), for messages."""
        from huggingface_hub import constants

        folder = f"models--{self.repo.replace('/', '--')}"
        return os.path.join(constants.HF_HUB_CACHE, folder, "snapshots", "*", self.filename)


def missing_weights(what: str, looked_for: Sequence[str], why: str, instead: str) -> BadInput:
    """The error for pretrained weights that are neither on disk nor downloadable."""
    return BadInput(f"No pretrained weights for {what} are cached and they cannot be downloaded ({why}). "
                    f"Looked for {', '.join(looked_for)}. {instead}")


def fetch(file: HubFile, what: str, instead: str, also_looked: Sequence[str] = ()) -> Path:
    """The local path of `file`, downloaded into the hub cache first when it is not there.

    `what` names the weights in errors ('deepsim-fc6'); `instead` is a sentence telling the user what
    else they can give; `also_looked` lists places the caller searched before the cache, for the offline error.
    """
    cached = file.cached()
    if cached is not None:
        return cached
    from huggingface_hub import constants, hf_hub_download

    if not reachable(constants.ENDPOINT):
        raise missing_weights(what, [*also_looked, file.cache_pattern()], offline_reason(constants.ENDPOINT),
                              instead)
    url = f"{constants.ENDPOINT}/{file.repo}/resolve/{file.revision}/{file.filename}"
    try:
        path = Path(hf_hub_download(file.repo, file.filename, revision=file.revision))
    except Exception as err:  # whatever failed (HTTP status, connection, size check), the remedy is the same
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInput(f"Downloading the weights of {what} from {url} failed ({type(err).__name__}: {reason}). "
                       f"Run again when the hub answers. {instead}") from None
    _check_sha256(path, what, url, instead)
    return path


def _check_sha256(path: Path, what: str, url: str, instead: str) -> None:
    """Refuse, and remove from the cache, a downloaded LFS file whose bytes are not the hub's."""
    blob = path.resolve()
    if not _SHA256.fullmatch(blob.name):  # not an LFS blob (or a cache without symlinks): nothing to compare
        return
    digest = hashlib.sha256()
    with open(blob, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != blob.name:
        blob.unlink()
        path.unlink(missing_ok=True)
        raise BadInput(
            f"The download of {what} from {url} is corrupt: its sha256 is {digest.hexdigest()[:16]}…, the hub "
            f"lists {blob.name[:16]}…. The broken copy was removed from the cache; run again to download it "
            f"anew. {instead}"
        )
