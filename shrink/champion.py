"""The model in production, fetched from the registry and measured again in this run.

Champion/challenger is only fair when both are timed on the same machine in the
same hour: on shared nodes one model's p50 moves 15-40% between hours, far more
than the 10% "no slower than production" tolerance. The record stored when the
champion was promoted came from another run, maybe another week; this module
downloads the champion (hash-verified) and measures it with the very benchmark
the candidates get, so the gate's production goals compare like with like. The
stored record remains the gate's fallback when this step could not run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from shrink import storage
from shrink.artifact import read_meta
from shrink.config import BenchmarkConfig
from shrink.errors import ShrinkError
from shrink.logs import log
from shrink.record import AbsentRecord, BenchmarkRecord

__all__ = ["CANDIDATE", "fetch_production", "measure_production"]

# The name the champion's benchmark record carries; never a candidate for promotion.
CANDIDATE = "production"


def fetch_production(model_name: str, registry_uri: str, out_dir: str | Path, s3=None) -> dict | None:
    """Download the artifact behind the ``production`` alias into ``out_dir``; None if nothing is promoted.

    The registry version holds the sealed artifact plus what promotion added
    (model card, stored benchmark, KServe manifest, upload manifest); those are
    removed so ``out_dir`` is the artifact exactly as it was benchmarked and
    promoted, and its content hash must equal the one the alias names.
    """
    from shrink.promote import CARD_FILES, production_pointer

    pointer = production_pointer(model_name, registry_uri, s3=s3)
    if pointer is None:
        return None
    out = Path(out_dir)
    storage.download_dir(pointer["uri"], out, s3=s3)
    for name in (*CARD_FILES, storage.MANIFEST):
        (out / name).unlink(missing_ok=True)
    meta = read_meta(out)  # every file against shrink.json
    if meta.content_hash() != pointer.get("content_hash"):
        raise ShrinkError(
            f"{pointer['uri']}: content hash {meta.content_hash()[:12]} is not the "
            f"{str(pointer.get('content_hash'))[:12]} the production alias names"
        )
    return pointer


def measure_production(
    model_name: str, registry_uri: str, dataset_dir: str | Path, cfg: BenchmarkConfig, work_dir: str | Path
) -> BenchmarkRecord | AbsentRecord:
    """The champion's benchmark record from this run, or ``{"candidate", "absent": why}`` when there is none.

    The record is the benchmark's own (``shrink.benchmark/v1``) with the alias's
    version and URI under ``production``; the gate matches it to the alias by content hash.
    """
    from shrink.benchmark import measure

    work = Path(work_dir)
    if work.exists():
        shutil.rmtree(work)
    pointer = fetch_production(model_name, registry_uri, work)
    if pointer is None:
        log.info("production: nothing promoted yet for %s; nothing to re-measure", model_name)
        return {"candidate": CANDIDATE, "absent": "nothing in production yet"}
    log.info("production: re-measuring %s (%s) from %s", pointer["version"], pointer.get("candidate"), pointer["uri"])
    record = measure(work, dataset_dir, cfg, CANDIDATE, model_uri=pointer["uri"]).record
    record["production"] = {k: pointer.get(k) for k in ("version", "uri", "candidate", "promoted_at")}
    return record
