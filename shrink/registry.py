"""Registry hygiene: which versions were promoted, and garbage collection of what nothing names.

Why: promotion is upload first, alias last (``shrink/promote.py``). That order is what keeps
the alias whole when a promoter dies, but every killed or outraced promoter leaves behind a
version prefix that no alias names (a half upload without a manifest, or a complete upload
that lost a concurrent promotion) and its local staging copy. Nothing cleaned them up, and
``list_versions`` could not tell them from versions that served production.

What counts as promoted: a version named by the ``production`` alias or anywhere in its
``previous`` chain (the rollback history), or one with a promotion marker,
``<model>/.promoted/<version>.json``, which ``promote`` writes right after it moves the alias.
The marker outlives the alias's bounded history; the alias chain covers a promoter killed
between its alias write and its marker.

``gc`` removes only version prefixes that are not promoted and whose newest object is older
than the grace period (an upload still in progress is young), and promotion staging folders
older than it. It never deletes the alias or a promoted version, and is a dry run unless told
otherwise.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shrink import storage
from shrink.errors import ShrinkError
from shrink.promote import ALIAS, MARKERS, _model_root, _read_alias, mark_promoted, marker_key  # noqa: F401 - re-exported
from shrink.promote import list_versions as _list_all

STAGING_PREFIX = "shrink-promote-"  # promote.py's tempfile.TemporaryDirectory prefix
DEFAULT_GRACE_S = 24 * 3600


def alias_chain(pointer: dict[str, Any] | None) -> list[str]:
    """The versions the alias names: production first, then its rollback history."""
    chain: list[str] = []
    while pointer:
        chain.append(pointer["version"])
        pointer = pointer.get("previous")
    return chain


@dataclass
class Inventory:
    """Every version prefix of a model, sorted into what it is.

    Attributes:
        production: The version the alias names (None before the first promotion).
        history: The alias's rollback chain after production, newest first.
        promoted: Complete versions that were promoted (production and history included), oldest first.
        unpromoted: Complete uploads that never reached production (losers of a concurrent
            promotion, promoters killed before their alias write), oldest first.
        incomplete: Prefixes without an upload manifest (a promoter killed mid-upload).
        newest: Per version prefix, the time of its newest object (UTC epoch seconds).
        size: Per version prefix, its bytes.
    """

    production: str | None = None
    history: list[str] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    unpromoted: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    newest: dict[str, float] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """For JSON output (``shrink registry list``)."""
        return asdict(self)


def _objects(s3, bucket: str, root: str) -> list[dict[str, Any]]:
    uri = f"s3://{bucket}/{root}"
    paginator = s3.get_paginator("list_objects_v2")
    pages = storage._call(uri, lambda: list(paginator.paginate(Bucket=bucket, Prefix=root)))
    return [obj for page in pages for obj in page.get("Contents", [])]


def inventory(model_name: str, registry_uri: str, s3=None) -> Inventory:
    """Sort a model's version prefixes into promoted, never promoted and incomplete."""
    s3 = s3 or storage.client()
    bucket, root = _model_root(model_name, registry_uri)
    pointer, _ = _read_alias(s3, bucket, root + ALIAS)
    chain = alias_chain(pointer)
    inv = Inventory(production=chain[0] if chain else None, history=chain[1:])
    complete, marked, seen = set(), set(), set()
    for obj in _objects(s3, bucket, root):
        rel = obj["Key"][len(root) :]
        head, _, rest = rel.partition("/")
        if not rest:  # the alias, or another object directly under the model
            continue
        if head == MARKERS:
            marked.add(rest.removesuffix(".json"))
            continue
        seen.add(head)
        modified = obj["LastModified"].timestamp()
        inv.newest[head] = max(inv.newest.get(head, 0.0), modified)
        inv.size[head] = inv.size.get(head, 0) + int(obj["Size"])
        if rest == storage.MANIFEST:
            complete.add(head)
    promoted = marked | set(chain)
    for version in sorted(seen):
        if version not in complete:
            inv.incomplete.append(version)
        elif version in promoted:
            inv.promoted.append(version)
        else:
            inv.unpromoted.append(version)
    return inv


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``6h`` or ``2d`` as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not match:
        raise ShrinkError(f"--grace {text!r}: give a duration such as 3600s, 30m, 6h or 2d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@dataclass
class GcReport:
    """What ``gc`` removed (or, in a dry run, would remove) and what it kept.

    Attributes:
        dry_run: Nothing was deleted.
        removed: Version prefixes (never promoted or incomplete) past the grace period.
        young: Unpromoted or incomplete prefixes kept because they are within the grace period.
        kept: Promoted versions (production and history included): never touched.
        staging: Local promotion staging folders past the grace period.
        bytes: Bytes of the removed prefixes.
    """

    dry_run: bool
    removed: list[str] = field(default_factory=list)
    young: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For JSON output."""
        return asdict(self)


def _delete_prefix(s3, bucket: str, prefix: str) -> None:
    keys = [obj["Key"] for obj in _objects(s3, bucket, prefix)]
    for i in range(0, len(keys), 1000):
        batch = {"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
        storage._call(f"s3://{bucket}/{prefix}", s3.delete_objects, Bucket=bucket, Delete=batch)


def stale_staging(staging_dir: str | Path | None, grace_s: float, now: float) -> list[Path]:
    """Promotion staging folders (``shrink-promote-*``) untouched for longer than the grace period."""
    root = Path(staging_dir or tempfile.gettempdir())
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob(STAGING_PREFIX + "*")):
        with contextlib.suppress(OSError):
            newest = max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])
            if path.is_dir() and now - newest > grace_s:
                found.append(path)
    return found


def gc(
    model_name: str,
    registry_uri: str,
    grace_s: float = DEFAULT_GRACE_S,
    dry_run: bool = True,
    staging_dir: str | Path | None = None,
    s3=None,
    now: float | None = None,
) -> GcReport:
    """Remove a model's never-promoted and incomplete versions and stale staging, past ``grace_s``.

    Args:
        model_name: The model in the registry.
        registry_uri: ``s3://bucket`` (optionally with a prefix).
        grace_s: Only what is older than this goes (an upload in progress is young).
        dry_run: Report only (the default); ``False`` deletes.
        staging_dir: Where promotions stage their copies (the system's temporary folder).
        s3: A boto3 S3 client; the standard environment's by default.
        now: The current time (tests).

    Returns:
        What was (or would be) removed and what was kept.
    """
    s3 = s3 or storage.client()
    now = time.time() if now is None else now
    bucket, root = _model_root(model_name, registry_uri)
    inv = inventory(model_name, registry_uri, s3=s3)
    report = GcReport(dry_run=dry_run, kept=list(inv.promoted))
    for version in sorted(inv.unpromoted + inv.incomplete):
        if now - inv.newest.get(version, now) > grace_s:
            report.removed.append(version)
            report.bytes += inv.size.get(version, 0)
        else:
            report.young.append(version)
    report.staging = [str(p) for p in stale_staging(staging_dir, grace_s, now)]
    if dry_run:
        return report
    # Read the alias and markers again just before deleting: a promotion that finished meanwhile wins.
    protected = set(inventory(model_name, registry_uri, s3=s3).promoted) | set(alias_chain(_alias(s3, bucket, root)))
    report.removed = [v for v in report.removed if v not in protected]
    for version in report.removed:
        _delete_prefix(s3, bucket, f"{root}{version}/")
    for path in report.staging:
        shutil.rmtree(path, ignore_errors=True)
    return report


def _alias(s3, bucket: str, root: str) -> dict[str, Any] | None:
    return _read_alias(s3, bucket, root + ALIAS)[0]


def describe(report: GcReport) -> list[str]:
    """Lines for the console."""
    verb = "would remove" if report.dry_run else "removed"
    lines = [
        f"{verb} {len(report.removed)} version(s), {report.bytes / 2**20:.1f} MB: {', '.join(report.removed) or '-'}"
    ]
    lines.append(f"{verb} {len(report.staging)} staging folder(s): {', '.join(report.staging) or '-'}")
    lines.append(f"kept {len(report.kept)} promoted version(s); {len(report.young)} within the grace period")
    if report.dry_run and (report.removed or report.staging):
        lines.append("dry run: nothing deleted; pass --yes to delete")
    return lines


def list_versions(model_name: str, registry_uri: str, s3=None, promoted: bool | None = None) -> list[str]:
    """Complete versions, oldest first, optionally only the promoted or the never-promoted ones.

    ``promoted=True``: those that reached production (a marker or the alias names them);
    ``False``: the complete uploads that never did; ``None``: both.
    """
    if promoted is None:
        return _list_all(model_name, registry_uri, s3=s3)
    inv = inventory(model_name, registry_uri, s3=s3)
    return inv.promoted if promoted else inv.unpromoted
