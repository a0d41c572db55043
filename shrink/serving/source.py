"""Where the served model comes from: a fixed artifact directory, or the registry's ``production`` alias.

On a cluster KServe's storage initializer downloads the promoted version to
``/mnt/models`` and a promotion rolls new pods, so the directory never changes
under a running server. Locally, and for users without KServe, the server
follows the alias itself: it reads the small pointer object every few seconds
and, when it names another version, downloads that version through
:func:`shrink.champion.fetch_production`, the same hash-verified fetch the
champion's benchmark uses (every file against the upload manifest, then the
whole artifact against ``shrink.json``, then its content hash against the one
the alias names).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shrink import storage
from shrink.artifact import read_meta
from shrink.errors import ShrinkError
from shrink.serving.answers import ModelVersion, version_of
from shrink.serving.config import ALIAS_SUFFIX, ServeConfig


class DirectorySource:
    """A fixed artifact directory: one version for the life of the server."""

    follows = False

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def describe(self) -> str:
        """Where the model comes from, for logs."""
        return str(self.directory)

    def check(self) -> ModelVersion | None:
        """The version the directory holds (files are verified when it is loaded)."""
        if not self.directory.is_dir():
            raise ShrinkError(f"{self.directory}: no such model directory")
        return version_of(self.directory, read_meta(self.directory, verify=False))

    def fetch(self, wanted: ModelVersion) -> tuple[Path, ModelVersion]:
        """The directory itself: nothing to download."""
        return self.directory, wanted

    def retain(self, versions: set[str]) -> None:
        """Nothing was downloaded, nothing to clean up."""


class AliasSource:
    """The registry alias ``s3://<bucket>/[<prefix>/]<model>/production.json``, polled."""

    follows = True

    def __init__(self, alias_uri: str, download_dir: str | Path, s3=None):
        bucket, key = storage.parse_uri(alias_uri)
        if not key.endswith(ALIAS_SUFFIX.lstrip("/")) or key.count("/") < 1:
            raise ShrinkError(f"{alias_uri}: not a production alias (s3://<bucket>/<model>/production.json)")
        parts = key.split("/")
        self.alias_uri = alias_uri
        self.model_name = parts[-2]
        self.registry_uri = "/".join([f"s3://{bucket}", *parts[:-2]])
        self.download_dir = Path(download_dir) / self.model_name
        self._s3 = s3

    @property
    def s3(self):
        """One client for the life of the source (made on first use, in the polling thread)."""
        if self._s3 is None:
            self._s3 = storage.client()
        return self._s3

    def describe(self) -> str:
        """Where the model comes from, for logs."""
        return self.alias_uri

    def check(self) -> ModelVersion | None:
        """The version the alias names now (one small GET), or None when nothing is promoted yet."""
        from shrink.promote import production_pointer

        pointer = production_pointer(self.model_name, self.registry_uri, s3=self.s3)
        return None if pointer is None else _version(pointer)

    def fetch(self, wanted: ModelVersion) -> tuple[Path, ModelVersion]:
        """Download (or reuse) and verify the version the alias names; the one fetched may be newer."""
        from shrink.champion import fetch_production

        out = self.download_dir / wanted.version
        pointer = fetch_production(self.model_name, self.registry_uri, out, s3=self.s3)
        if pointer is None:
            raise ShrinkError(f"{self.alias_uri}: the alias was removed while {wanted.version} was being fetched")
        got = _version(pointer)
        if got.version != wanted.version:  # promoted again meanwhile: file it under its own name
            final = self.download_dir / got.version
            shutil.rmtree(final, ignore_errors=True)
            out.rename(final)
            out = final
        return out, got

    def retain(self, versions: set[str]) -> None:
        """Delete downloaded versions other than ``versions`` (the one serving and the one before it)."""
        if not self.download_dir.is_dir():
            return
        for path in self.download_dir.iterdir():
            if path.is_dir() and path.name not in versions and not path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)


def _version(pointer: dict) -> ModelVersion:
    return ModelVersion(
        version=str(pointer["version"]),
        content_hash=str(pointer.get("content_hash") or ""),
        source=str(pointer["uri"]),
        candidate=pointer.get("candidate"),
    )


def open_source(cfg: ServeConfig) -> DirectorySource | AliasSource:
    """The source ``cfg.model`` names."""
    if cfg.follows_alias:
        return AliasSource(cfg.model, cfg.download_dir)
    return DirectorySource(cfg.model)
