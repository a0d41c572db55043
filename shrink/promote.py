"""Promotion into the model registry on S3, the ``production`` alias, and rollback.

Layout under the registry root (``s3://<bucket>``)::

    <model-name>/<version>/            one immutable prefix per promoted model
        <artifact files>, shrink.json  the sealed shrink artifact, as benchmarked
        benchmark.json                 its benchmark record (champion/challenger reads it)
        MODEL_CARD.md, model-card.json metrics, SLOs, lineage, data, hardware
        inferenceservice.yaml          KServe manifest for this version (shrink.serving.manifest)
        .shrink-manifest.json          written last: the upload is complete
    <model-name>/production.json       the alias: a small pointer object

Order matters: upload everything, read the manifest back and compare every
sha256 with the local files, and only then switch the alias with one PUT. A
promotion that dies half way leaves an orphan prefix without a manifest and the
alias untouched. The alias is written with a conditional PUT (``If-Match`` on
the ETag read before, ``If-None-Match: *`` when there was none), which SeaweedFS
and S3 evaluate atomically: of two concurrent promotions exactly one switches
the alias, the other fails with the winner named. Versions are never
overwritten or deleted, so rollback only moves the pointer.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shrink import storage
from shrink.artifact import ArtifactMeta, hash_tree, read_meta
from shrink.errors import ShrinkError
from shrink.logs import log
from shrink.serving.manifest import MODEL_FORMATS, RUNTIME, inference_service
from shrink.slo import GateConfig

ALIAS = "production.json"
CARD_FILES = ("benchmark.json", "MODEL_CARD.md", "model-card.json", "inferenceservice.yaml")
# The KServe objects of a promoted version: every format is served by `shrink serve` (shrink/serving/).
RUNTIMES = {fmt: RUNTIME for fmt in MODEL_FORMATS}
# How many earlier pointers an alias keeps inline: enough to roll back repeatedly, bounded in size.
HISTORY_DEPTH = 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _model_root(model_name: str, registry_uri: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/') of a model in the registry."""
    if not _NAME.match(model_name or ""):
        raise ShrinkError(f"model name {model_name!r}: use letters, digits, '.', '_' or '-' (it becomes an S3 prefix)")
    bucket, prefix = storage.parse_uri(registry_uri.rstrip("/") + "/")
    return bucket, f"{prefix}{model_name}/"


def alias_uri(model_name: str, registry_uri: str) -> str:
    """Where the ``production`` pointer of a model lives."""
    bucket, root = _model_root(model_name, registry_uri)
    return f"s3://{bucket}/{root}{ALIAS}"


def _read_alias(s3, bucket: str, key: str) -> tuple[dict | None, str | None]:
    """The alias pointer and its ETag, or (None, None) when nothing was promoted yet."""
    from botocore.exceptions import BotoCoreError, ClientError

    uri = f"s3://{bucket}/{key}"
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
        body = obj["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None, None
        raise storage._explain(exc, uri) from None
    except BotoCoreError as exc:
        raise storage._explain(exc, uri) from None
    try:
        pointer = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ShrinkError(f"{uri}: production alias is not valid JSON: {exc}") from None
    if not isinstance(pointer, dict) or not {"version", "uri"} <= set(pointer):
        raise ShrinkError(f"{uri}: production alias lacks version/uri")
    return pointer, obj["ETag"]


def _write_alias(s3, bucket: str, key: str, pointer: dict, etag: str | None) -> None:
    """Replace the alias only if it is still the object we read (one PUT; readers see old or new)."""
    from botocore.exceptions import BotoCoreError, ClientError

    uri = f"s3://{bucket}/{key}"
    body = json.dumps(pointer, indent=2, sort_keys=True).encode()
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            current, _ = _read_alias(s3, bucket, key)
            if current == pointer:  # our own PUT landed and a retry of it was refused
                return
            now = current.get("version") if current else None
            raise ShrinkError(
                f"{uri}: the production alias changed while promoting {pointer['version']} "
                f"(it now names {now}); another promotion won. {pointer['uri']} stays uploaded but is not "
                "in production; rerun the gate to compare against the new production model"
            ) from None
        if code == "NotImplemented" or status == 501:
            raise ShrinkError(f"{uri}: the object store does not support conditional writes") from None
        raise storage._explain(exc, uri) from None
    except BotoCoreError as exc:
        raise storage._explain(exc, uri) from None


def _trim(pointer: dict | None, depth: int = HISTORY_DEPTH) -> dict | None:
    if pointer is None or depth <= 0:
        return None
    return {**pointer, "previous": _trim(pointer.get("previous"), depth - 1)}


def production_pointer(model_name: str, registry_uri: str, s3=None) -> dict | None:
    """The ``production`` alias pointer (version, uri, content hash ...), or None if nothing was promoted."""
    s3 = s3 or storage.client()
    bucket, root = _model_root(model_name, registry_uri)
    return _read_alias(s3, bucket, root + ALIAS)[0]


def current_production(model_name: str, registry_uri: str, s3=None) -> dict | None:
    """The production pointer with the stored benchmark record under ``benchmark`` (None if nothing promoted).

    The gate uses the record for champion/challenger: a candidate must beat what
    serves today, measured the same way.
    """
    s3 = s3 or storage.client()
    pointer = production_pointer(model_name, registry_uri, s3=s3)
    if pointer is None:
        return None
    bench_uri = pointer["uri"].rstrip("/") + "/benchmark.json"
    benchmark = storage.get_json(bench_uri, s3=s3) if storage.exists(bench_uri, s3=s3) else None
    return {**pointer, "benchmark": benchmark}


def list_versions(model_name: str, registry_uri: str, s3=None) -> list[str]:
    """Complete versions (those with an upload manifest), oldest first.

    ``shrink.registry.list_versions`` tells promoted versions from uploads that never reached production.
    """
    s3 = s3 or storage.client()
    bucket, root = _model_root(model_name, registry_uri)
    keys = storage.list_keys(f"s3://{bucket}/{root}", s3=s3)
    return sorted({k[len(root) :].split("/")[0] for k in keys if k.endswith("/" + storage.MANIFEST)})


MARKERS = ".promoted"  # <model>/.promoted/<version>.json: written once the alias has named the version


def marker_key(root: str, version: str) -> str:
    """Where the promotion marker of ``version`` lives, under the model's prefix ``root``."""
    return f"{root}{MARKERS}/{version}.json"


def mark_promoted(s3, bucket: str, root: str, pointer: dict) -> None:
    """Record that ``pointer['version']`` was promoted (call after the alias names it)."""
    body = {k: v for k, v in pointer.items() if k != "previous"}
    storage.put_json(f"s3://{bucket}/{marker_key(root, pointer['version'])}", body, s3=s3)


def make_version(meta: ArtifactMeta, when: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<hash8>``: sorts by time, and two models promoted in one second still differ."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    return f"{stamp}-{meta.content_hash()[:8]}"


def model_card(
    model_name: str,
    version: str,
    uri: str,
    meta: ArtifactMeta,
    candidate: str,
    decision: dict,
    record: dict | None,
    previous: dict | None,
    promoted_at: str,
) -> dict:
    """What a reviewer needs to trust the model: figures, goals met, where it came from, what it ran on."""
    entry = next((c for c in decision.get("candidates", []) if c.get("name") == candidate), {})
    teacher = next((c for c in decision.get("candidates", []) if c.get("name") == "teacher"), {})
    record = record or {}
    return {
        "model_name": model_name,
        "version": version,
        "uri": uri,
        "candidate": candidate,
        "content_hash": meta.content_hash(),
        "promoted_at": promoted_at,
        "format": meta.format,
        "precision": meta.precision,
        "technique": meta.technique,
        "settings": meta.settings,
        "labels": meta.label_names,
        "lineage": [
            *meta.lineage,
            {
                "technique": meta.technique,
                "format": meta.format,
                "precision": meta.precision,
                "content_hash": meta.content_hash(),
            },
        ],
        "metrics": {k: record.get(k) for k in ("accuracy", "latency_ms", "throughput_qps", "size", "memory", "cost")},
        "summary": entry.get("summary"),
        "teacher_summary": teacher.get("summary"),
        "slos": entry.get("checks", []),
        "decision": {
            "reason": decision.get("reason"),
            "policy": decision.get("policy"),
            "created": decision.get("created"),
        },
        "data": record.get("dataset"),
        "hardware": record.get("hardware"),
        "threads": record.get("threads"),
        "runtime": meta.runtime,
        "previous_version": previous.get("version") if previous else None,
    }


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "n/a" if x is None else format(x, spec) if isinstance(x, int | float) else str(x)


def model_card_markdown(card: dict) -> str:
    """The model card for people: the same facts as ``model-card.json``, as Markdown tables."""
    s = card.get("summary") or {}
    lines = [
        f"# {card['model_name']} {card['version']}",
        "",
        f"Candidate `{card['candidate']}`: {card['technique']}, {card['format']} {card['precision']}. "
        f"Promoted {card['promoted_at']}; storage `{card['uri']}`; "
        f"content hash `{card['content_hash'][:16]}`.",
        "",
        f"Why: {card['decision'].get('reason')}",
        "",
        "## Measurements",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {_fmt(s.get('accuracy'))} |",
        f"| oos recall | {_fmt(s.get('oos_recall'))} |",
        f"| p50 / p95 latency (ms) | {_fmt(s.get('p50_ms'))} / {_fmt(s.get('p95_ms'))} |",
        f"| throughput (req/s, best batch) | {_fmt(s.get('throughput_qps'))} |",
        f"| model size (MB) | {_fmt(s.get('size_mb'))} |",
        f"| peak memory (MB) | {_fmt(s.get('memory_mb'))} |",
        f"| speed-up vs teacher (p50) | {_fmt(s.get('speedup_p50'), '.2f')}x |",
        f"| size reduction vs teacher | {_fmt(_pct(s.get('size_reduction')), '.1f')}% |",
        "",
        "## SLOs",
        "",
        "| SLO | measured | limit | how the limit was set | result |",
        "|---|---|---|---|---|",
    ]
    for c in card["slos"]:
        how = c.get("resolved") or c.get("reason") or ""
        verdict = "pass" if c["passed"] else "FAIL"
        lines.append(f"| {c['slo']} | {_fmt(c['measured'])} | {_fmt(c['limit'])} | {how} | {verdict} |")
    data, hw = card.get("data") or {}, card.get("hardware") or {}
    lines += [
        "",
        "## Lineage",
        "",
        *[
            f"{i + 1}. {step.get('technique')} ({step.get('format')} {step.get('precision')}, "
            f"`{str(step.get('content_hash'))[:12]}`)"
            for i, step in enumerate(card["lineage"])
        ],
        "",
        "## Data and hardware",
        "",
        f"- test split: {data.get('split')} ({data.get('examples')} examples, "
        f"fingerprint `{data.get('fingerprint')}`, oos label: {data.get('has_oos')})",
        f"- CPU: {hw.get('cpu_model')} ({hw.get('cores_used')} core(s) used of {hw.get('logical_cpus')}); "
        f"ISA {hw.get('isa')}; fingerprint `{str(hw.get('fingerprint'))[:16]}`",
        f"- libraries: {hw.get('libraries')}",
        f"- labels: {len(card['labels'])}",
        f"- previous production version: {card.get('previous_version') or 'none'}",
        "",
    ]
    return "\n".join(lines)


def _verify_upload(stage: Path, uri: str, s3) -> None:
    """Read the manifest back and check each object against the local file: hash and size."""
    from botocore.exceptions import BotoCoreError, ClientError

    local = hash_tree(stage, exclude=(storage.MANIFEST,))
    remote = storage.read_manifest(uri, s3=s3)
    if {k: v["sha256"] for k, v in remote.items()} != local:
        raise ShrinkError(f"{uri}: uploaded manifest does not match the local files")
    bucket, prefix = storage.parse_uri(uri)
    for rel in local:
        try:
            size = s3.head_object(Bucket=bucket, Key=prefix + rel)["ContentLength"]
        except (BotoCoreError, ClientError) as exc:
            raise storage._explain(exc, uri + rel) from None
        if size != (stage / rel).stat().st_size:
            raise ShrinkError(f"{uri}{rel}: stored size {size} differs from the local file")


def promote(
    model_dir: str | Path, decision: dict, cfg: GateConfig, model_name: str, registry_uri: str, s3=None
) -> dict:
    """Publish the chosen candidate as a new registry version and point ``production`` at it.

    Args:
        model_dir: The chosen candidate's sealed shrink artifact.
        decision: The gate's decision; its ``chosen`` candidate must be this artifact (same content hash).
        cfg: Gate settings (``compare_to_production`` makes the alias check below strict).
        model_name: Registry name: ``<registry_uri>/<model_name>/<version>/``.
        registry_uri: ``s3://bucket`` (optionally with a prefix).
        s3: A boto3 S3 client; the standard environment's by default.

    Returns:
        The new alias pointer, with ``unchanged: True`` when this model already is in production.
    """
    s3 = s3 or storage.client()
    candidate = decision.get("chosen")
    if not candidate:
        raise ShrinkError("decision: no candidate was chosen; nothing to promote")
    meta = read_meta(model_dir)  # verifies every file against shrink.json
    record = (decision.get("records") or {}).get(candidate)
    expected = ((record or {}).get("artifact") or {}).get("content_hash")
    if not expected:
        raise ShrinkError(
            f"decision: no benchmark record with a content hash for {candidate!r}; "
            "only a measured model can be promoted"
        )
    if expected != meta.content_hash():
        raise ShrinkError(
            f"{model_dir}: content hash {meta.content_hash()[:12]} is not the benchmarked "
            f"{candidate} ({expected[:12]}); refusing to promote a model that was not measured"
        )
    clash = [f for f in CARD_FILES if (Path(model_dir) / f).exists()]
    if clash:
        raise ShrinkError(f"{model_dir}: holds {clash[0]}, a name the registry version reserves")
    bucket, root = _model_root(model_name, registry_uri)
    alias_key = root + ALIAS
    current, etag = _read_alias(s3, bucket, alias_key)
    decided_against = (decision.get("production") or {}).get("version")
    if current is not None and current.get("content_hash") == meta.content_hash():
        if cfg.compare_to_production and current.get("version") != decided_against:
            # The gate saw another production model, yet the alias names this one: an earlier attempt of
            # this promotion moved it and died before reporting. Say so; "unchanged" would be untrue.
            log.info(
                "promote: production already is %s (%s), moved by an earlier attempt", current["version"], candidate
            )
            mark_promoted(s3, bucket, root, current)
            return {**current, "unchanged": False, "completed_earlier": True}
        log.info("promote: %s is already in production as %s; alias unchanged", candidate, current["version"])
        return {**current, "unchanged": True}
    if cfg.compare_to_production:
        now = (current or {}).get("version")
        if now != decided_against:
            raise ShrinkError(
                f"s3://{bucket}/{alias_key}: production is {now} but the gate compared against "
                f"{decided_against}; rerun the gate before promoting"
            )

    now = time.time()
    promoted_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    version = make_version(meta, now)
    uri = f"s3://{bucket}/{root}{version}/"
    with tempfile.TemporaryDirectory(prefix="shrink-promote-") as tmp:
        stage = Path(tmp) / version
        shutil.copytree(model_dir, stage)
        card = model_card(model_name, version, uri, meta, candidate, decision, record, current, promoted_at)
        (stage / "benchmark.json").write_text(json.dumps(record or {}, indent=2))
        (stage / "model-card.json").write_text(json.dumps(card, indent=2))
        (stage / "MODEL_CARD.md").write_text(model_card_markdown(card))
        (stage / "inferenceservice.yaml").write_text(
            yaml.safe_dump(inference_service(model_name, version, uri, meta, record), sort_keys=False)
        )
        read_meta(stage)  # the copy is still the sealed artifact
        log.info("promote: uploading %s (%s) to %s", candidate, meta.technique, uri)
        storage.upload_dir(stage, uri, s3=s3)
        _verify_upload(stage, uri, s3)
    pointer = {
        "version": version,
        "uri": uri,
        "content_hash": meta.content_hash(),
        "candidate": candidate,
        "format": meta.format,
        "promoted_at": promoted_at,
        "updated_at": promoted_at,
        "action": "promote",
        "previous": _trim(current),
    }
    _write_alias(s3, bucket, alias_key, pointer, etag)
    mark_promoted(s3, bucket, root, pointer)  # after the alias: a marker never names a loser
    log.info("promote: production -> %s (previous: %s)", version, current and current["version"])
    return pointer


@dataclass(frozen=True)
class PromotionResult:
    """What the promote step did: the candidate chosen (or None) and the document it wrote."""

    chosen: str | None
    document: dict

    @property
    def uri(self) -> str:
        """The promoted version's URI, or "" when nothing was promoted."""
        return self.document["uri"] if self.document["promoted"] else ""

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``promoted`` artifact's metadata: candidate, version, where, content hash, unchanged."""
        doc = self.document
        if not doc["promoted"]:
            return {"promoted": False}
        return {
            "promoted": True,
            "candidate": self.chosen,
            "version": doc["version"],
            "registry_uri": doc["uri"],
            "content_hash": doc["content_hash"],
            "unchanged": bool(doc.get("unchanged")),
        }


def _first_servable(chosen: str, decision: dict, models: dict) -> tuple[str, str | Path | None, dict[str, str]]:
    """The gate's choice if the serving runtime can load it, else the next passing candidate in rank order.

    Why here: the gate judges benchmark records; only this step holds the models. Each is loaded
    and asked one request through the serving code path (:func:`shrink.serving.servable.check_servable`),
    so a promotion never ends in a deployment that cannot start. Returns ``(name, model or None, refused)``
    with why each refused candidate cannot be served.
    """
    from shrink.serving.servable import check_servable

    refused: dict[str, str] = {}
    for name in [chosen, *[n for n in decision.get("ranking") or [] if n != chosen]]:
        model = _chosen_model(name, decision, models) if name == chosen else _passed_model(name, decision, models)
        if model is None:
            continue
        try:
            check_servable(model)
        except ShrinkError as exc:
            refused[name] = str(exc)
            log.warning("promote: %s is not servable, trying the next passing candidate: %s", name, exc)
            continue
        return name, model, refused
    return chosen, None, refused


def _passed_model(name: str, decision: dict, models: dict) -> str | Path | None:
    """A lower-ranked candidate's model, or None when this run did not pass it to promote."""
    try:
        return _chosen_model(name, decision, models)
    except ShrinkError:
        return None


def _chosen_model(chosen: str, decision: dict, models: dict[str, str | Path | list]) -> str | Path:
    """The model artifact the decision chose: by name, or, in a per-trial list, by the recorded content hash."""
    found = models.get(chosen)
    if isinstance(found, str | Path):
        return found
    listed = models.get(chosen.split("@", 1)[0])
    if "@" in chosen and isinstance(listed, list):
        digest = ((decision.get("records") or {}).get(chosen) or {}).get("artifact", {}).get("content_hash")
        for path in listed:
            try:
                if digest and read_meta(path, verify=False).content_hash() == digest:
                    return path
            except ShrinkError:
                continue
    raise ShrinkError(f"decision chose {chosen!r}, but no model artifact named {chosen!r} was passed to promote")


def promote_chosen(
    decision_path: str | Path,
    models: dict[str, str | Path],
    cfg: GateConfig,
    model_name: str,
    out_path: str | Path,
    s3=None,
) -> PromotionResult:
    """The promote step: publish the decision's chosen candidate, or record that nothing was chosen.

    Args:
        decision_path: The gate's decision record (JSON).
        models: Candidate name -> its model artifact, for the candidates this run produced; a list
            for a per-trial candidate (the shape search), matched to ``<name>@<trial>`` by the content
            hash the decision recorded for it.
        cfg: Gate settings (registry bucket, champion/challenger).
        model_name: Registry name: ``<registry>/<model_name>/<version>/``.
        out_path: Where the alias pointer goes (JSON, ``promoted: true``), or, when the gate chose
            nothing, ``{"promoted": false, "reason", "production"}`` and production stays.
        s3: A boto3 S3 client; the standard environment's by default.

    Returns:
        The chosen candidate and the document written to ``out_path``.

    Raises:
        ShrinkError: the decision is unreadable, the chosen candidate's model was not passed,
            or :func:`promote` refuses.
    """
    try:
        decision = json.loads(Path(decision_path).read_text())
    except (OSError, ValueError) as exc:
        raise ShrinkError(f"{decision_path}: decision unreadable: {exc}") from None
    chosen = decision.get("chosen")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not chosen:
        production = (decision.get("production") or {}).get("version")
        log.warning(
            "promote: the gate chose no candidate (%s); production stays at %s",
            decision.get("reason"),
            production or "nothing",
        )
        document = {"promoted": False, "reason": decision.get("reason"), "production": production}
    else:
        chosen, model, refused = _first_servable(chosen, decision, models)
        production = (decision.get("production") or {}).get("version")
        if model is None:
            reason = f"no passing candidate is servable ({'; '.join(refused.values())})"
            log.warning("promote: %s; production stays at %s", reason, production or "nothing")
            document = {"promoted": False, "reason": reason, "production": production, "not_servable": refused}
            chosen = None
        else:
            ruling = {**decision, "chosen": chosen}
            document = {"promoted": True, **promote(model, ruling, cfg, model_name, cfg.registry_uri, s3=s3)}
            if refused:
                document |= {"candidate": chosen, "not_servable": refused}
    out.write_text(json.dumps(document, indent=2))
    return PromotionResult(chosen, document)


def rollback(model_name: str, registry_uri: str, s3=None) -> dict:
    """Point ``production`` back at the previous version (which must still be complete in the registry)."""
    s3 = s3 or storage.client()
    bucket, root = _model_root(model_name, registry_uri)
    alias_key = root + ALIAS
    current, etag = _read_alias(s3, bucket, alias_key)
    if current is None:
        raise ShrinkError(f"s3://{bucket}/{alias_key}: nothing in production; nothing to roll back")
    previous = current.get("previous")
    if not previous:
        raise ShrinkError(f"s3://{bucket}/{alias_key}: {current['version']} has no previous version to roll back to")
    storage.read_manifest(previous["uri"], s3=s3)  # the earlier version must still be complete
    # updated_at makes the body new, so an ETag read before the rollback can never match it again.
    pointer = {**previous, "updated_at": _now(), "action": "rollback", "rolled_back_from": current["version"]}
    _write_alias(s3, bucket, alias_key, pointer, etag)
    log.info("rollback: production %s -> %s", current["version"], previous["version"])
    return pointer
