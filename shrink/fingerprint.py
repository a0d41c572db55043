"""The identity of the data behind a source: what decides whether a cached step may be reused.

Why: ``prepare_data`` used to be cached on its parameters, and those hold the data *source*
(a path, an ``s3://`` prefix, a hub id), not the data. When new data landed at the same
source (a scheduled retraining does exactly this) the next run reused the old dataset and,
through it, every step after it: nothing was retrained, silently.

How the pipeline uses it: an uncached step, ``fingerprint_data``, computes the fingerprint
(cheap: it hashes or lists, it does not parse) and passes it to ``prepare_data`` as a
parameter, so it is part of that step's cache key:

* **kfp.local** keys a task on its component, command, arguments and environment
  (``kfp/local/cache.py``, ``LocalCache.compute_key``); an input artifact enters the key by
  its URI and metadata. A new fingerprint misses ``prepare_data``'s cache; its new dataset
  artifact (a new URI under this run's root) then misses every step downstream. An unchanged
  fingerprint hits, the dataset artifact is the cached one, and so is everything after it.
* **KFP on a cluster** keys a task on its input parameter values, the *names* of its input
  artifacts (each produced artifact has its own), its output specs and its container image
  and command (``CacheKey`` in ``kubeflow/pipelines`` ``api/v2alpha1/cache_key.proto``). The
  same reasoning holds: the fingerprint parameter decides ``prepare_data``; the dataset
  artifact, new or reused, decides the rest.

What is hashed: a local file or folder: the sha256 of every file (hidden ones excepted) with
its relative path and size. ``s3://``: each object's key, ETag and size from the listing (the
ETag changes with the bytes; a multipart upload's ETag is not an MD5 but still does). ``hf:``:
the dataset repository's current commit sha on the hub.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shrink.errors import ShrinkError


@dataclass(frozen=True)
class Fingerprint:
    """What :func:`fingerprint_source` found.

    Attributes:
        digest: sha256 hex over the contents' identities; equal digests mean equal data.
        kind: ``files``, ``s3`` or ``hub``.
        objects: How many files or objects were covered.
        bytes: Their total size (0 for the hub, whose sizes are not listed).
    """

    digest: str
    kind: str
    objects: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        """For JSON: the dataset's ``shrink-data.json`` and a step's metadata."""
        return asdict(self)


def _digest(entries: list[tuple[str, str, int]]) -> str:
    h = hashlib.sha256()
    for name, ident, size in sorted(entries):
        h.update(f"{name}\0{ident}\0{size}\n".encode())
    return h.hexdigest()


def _local(path: Path) -> Fingerprint:
    from shrink import files
    from shrink.artifact import sha256_file

    if not path.exists():
        raise ShrinkError(f"{path}: dataset not found")
    if path.is_file():
        paths = [path]
        root = path.parent
    else:
        root = path
        paths = [
            p
            for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
        if not paths:
            raise ShrinkError(f"{path}: the dataset folder holds no files")
    entries = []
    for p in paths:
        with files.guarded(p):
            entries.append((p.relative_to(root).as_posix(), sha256_file(p), p.stat().st_size))
    return Fingerprint(_digest(entries), "files", len(entries), sum(e[2] for e in entries))


def _s3(uri: str) -> Fingerprint:
    from shrink import storage

    s3 = storage.client()
    bucket, key = storage.parse_uri(uri)
    if key and not key.endswith("/"):
        from botocore.exceptions import ClientError

        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            return Fingerprint(
                _digest([(Path(key).name, head["ETag"], head["ContentLength"])]), "s3", 1, head["ContentLength"]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise storage._explain(exc, uri) from None
        except Exception as exc:  # noqa: BLE001 - botocore's connection errors
            raise storage._explain(exc, uri) from None
    prefix = key.rstrip("/") + "/" if key else ""
    paginator = s3.get_paginator("list_objects_v2")
    pages = storage._call(uri, lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix)))
    entries = [
        (obj["Key"][len(prefix) :], obj["ETag"], obj["Size"])
        for page in pages
        for obj in page.get("Contents", [])
        if not obj["Key"].endswith("/")
    ]
    if not entries:
        raise ShrinkError(f"{uri}: no such object or prefix")
    return Fingerprint(_digest(entries), "s3", len(entries), sum(e[2] for e in entries))


def _hub(source: str) -> Fingerprint:
    from shrink import hub

    hub.ensure_reachable(source)
    from huggingface_hub import HfApi

    name = hub.hub_id(source)
    repo, _ = hub.dataset_ref(source)
    try:
        sha = HfApi().dataset_info(repo).sha
    except Exception as exc:  # noqa: BLE001 - the hub client raises many types; the message is what matters
        raise ShrinkError(f"{source}: cannot read the dataset's revision on the hub: {exc}".splitlines()[0]) from None
    return Fingerprint(_digest([(name, sha or "", 0)]), "hub", 1, 0)


def fingerprint_source(source: str) -> Fingerprint:
    """The fingerprint of the data at ``source`` (a local path, ``s3://`` URI or ``hf:`` id) as it is now."""
    from shrink import hub

    if source.startswith("s3://"):
        return _s3(source)
    if hub.is_hub_id(source):
        return _hub(source)
    return _local(Path(source))
