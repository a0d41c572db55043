"""Registry hygiene on a real SeaweedFS: promoted versions are marked, orphans and staging are collected, and
nothing an alias or its history names is touched."""

import time

import pytest

from shrink import registry, storage
from shrink.cli import main
from shrink.errors import ShrinkError
from shrink.promote import promote, rollback
from shrink.registry import list_versions
from tests.factories import REGISTRY, decision_for, fresh_name, make_artifact


def _snapshot(s3, name):
    """Every object of the model except the orphans' prefixes: key -> bytes."""
    out = {}
    for obj in registry._objects(s3, "shrink-models", f"{name}/"):
        out[obj["Key"]] = s3.get_object(Bucket="shrink-models", Key=obj["Key"])["Body"].read()
    return out


@pytest.fixture
def registry_with_orphans(seaweed, tmp_path):
    """Two promotions (v2 in production, v1 its history), a lost race, a killed upload and killed staging."""
    s3 = storage.client()
    name = fresh_name()
    a1, m1 = make_artifact(tmp_path / "a1", seed=1)
    d1, cfg = decision_for(name, m1, name)
    v1 = promote(a1, d1, cfg, name, REGISTRY)
    a2, m2 = make_artifact(tmp_path / "a2", seed=2)
    d2, cfg = decision_for(name, m2, name, p95=5.0)
    v2 = promote(a2, d2, cfg, name, REGISTRY)
    # v2's promoter "died" between its alias write and its marker: the alias alone must protect it.
    s3.delete_object(Bucket="shrink-models", Key=registry.marker_key(f"{name}/", v2["version"]))
    keep = _snapshot(s3, name)
    # The loser of a concurrent promotion: a complete upload no alias names.
    a3, _ = make_artifact(tmp_path / "a3", seed=3)
    storage.upload_dir(a3, f"{REGISTRY}/{name}/20990101T000000Z-loser00/")
    # A promoter killed mid-upload: a few files, no manifest.
    for i in range(3):
        s3.put_object(Bucket="shrink-models", Key=f"{name}/20990101T000001Z-partial0/model{i}.onnx", Body=b"x" * 100)
    # Its local staging copy, left behind.
    staging = tmp_path / "tmp" / "shrink-promote-dead" / "20990101T000001Z-partial0"
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(b"x" * 1000)
    return name, v1, v2, keep, tmp_path / "tmp", (a2, d2, cfg)


def test_list_versions_separates_promoted_from_never_promoted(registry_with_orphans):
    name, v1, v2, *_ = registry_with_orphans
    assert list_versions(name, REGISTRY, promoted=True) == [v1["version"], v2["version"]]
    assert list_versions(name, REGISTRY, promoted=False) == ["20990101T000000Z-loser00"]
    inv = registry.inventory(name, REGISTRY)
    assert inv.production == v2["version"] and inv.history == [v1["version"]]
    assert inv.incomplete == ["20990101T000001Z-partial0"]


def test_gc_is_a_dry_run_then_removes_orphans_and_staging_only(registry_with_orphans, capsys):
    name, v1, v2, keep, staging, _ = registry_with_orphans
    s3 = storage.client()
    later = time.time() + 5
    young = registry.gc(name, REGISTRY, grace_s=3600, dry_run=False, staging_dir=staging, now=later)
    assert young.removed == [] and young.staging == [] and len(young.young) == 2  # within the grace period

    dry = registry.gc(name, REGISTRY, grace_s=0, staging_dir=staging, now=later)
    assert dry.dry_run and dry.removed == ["20990101T000000Z-loser00", "20990101T000001Z-partial0"]
    assert dry.staging == [str(staging / "shrink-promote-dead")] and dry.bytes > 0
    assert set(dry.kept) == {v1["version"], v2["version"]}
    assert list_versions(name, REGISTRY, promoted=False) == ["20990101T000000Z-loser00"]  # nothing deleted
    assert (staging / "shrink-promote-dead").is_dir()

    assert main(["--state-dir", str(staging / "none"), "registry", "gc", "--model-name", name, "--grace", "0s"]) == 0
    assert "dry run: nothing deleted; pass --yes to delete" in capsys.readouterr().out

    done = registry.gc(name, REGISTRY, grace_s=0, dry_run=False, staging_dir=staging, now=later)
    assert done.removed == dry.removed and not (staging / "shrink-promote-dead").exists()
    after = _snapshot(s3, name)
    assert after == keep, "gc changed or removed something an alias, its history or a marker names"
    inv = registry.inventory(name, REGISTRY)
    assert inv.unpromoted == [] and inv.incomplete == []
    assert rollback(name, REGISTRY)["version"] == v1["version"]  # the history still works


def test_gc_refuses_a_bad_grace():
    with pytest.raises(ShrinkError, match="--grace 'soon'"):
        registry.parse_duration("soon")
    assert registry.parse_duration("6h") == 21600 and registry.parse_duration("90") == 90


def test_rerun_after_the_alias_moved_says_it_was_promoted(registry_with_orphans):
    """A promoter killed after its alias write: its rerun reports the promotion, not "unchanged"."""
    name, v1, v2, _, _, (a2, d2, cfg) = registry_with_orphans
    assert d2["production"]["version"] == v1["version"]  # the gate compared against v1; the alias now names v2
    again = promote(a2, d2, cfg, name, REGISTRY)
    assert again["version"] == v2["version"] and again["completed_earlier"] and not again["unchanged"]
    assert list_versions(name, REGISTRY, promoted=True) == [v1["version"], v2["version"]]
