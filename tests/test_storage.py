import os

import pytest

from shrink import storage
from shrink.config import DataConfig
from shrink.data import load_dataset
from shrink.errors import ShrinkError


def test_upload_download_round_trip_with_manifest(seaweed, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    manifest = storage.upload_dir(src, "s3://shrink-test/round-trip/")
    assert set(manifest) == {"a.txt", "sub/b.bin"}
    out = storage.download_dir("s3://shrink-test/round-trip", tmp_path / "dst")
    assert (out / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert storage.download_dir("s3://shrink-test/round-trip", out) == out  # idempotent


def test_download_detects_corruption(seaweed, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"x" * 1000)
    storage.upload_dir(src, "s3://shrink-test/corrupt/")
    storage.client().put_object(Bucket="shrink-test", Key="corrupt/w.bin", Body=b"y" * 1000)
    with pytest.raises(ShrinkError, match="w.bin: sha256 mismatch after download"):
        storage.download_dir("s3://shrink-test/corrupt", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()  # nothing half-written left behind


def test_prefix_without_manifest_is_incomplete(seaweed, tmp_path):
    storage.client().put_object(Bucket="shrink-test", Key="partial/file.txt", Body=b"x")
    with pytest.raises(ShrinkError, match="partial: no .shrink-manifest.json"):
        storage.download_dir("s3://shrink-test/partial", tmp_path / "dst")


def test_missing_bucket_and_key_are_named(seaweed, tmp_path):
    with pytest.raises(ShrinkError, match="s3://no-such-bucket/x: bucket does not exist"):
        storage.get_json("s3://no-such-bucket/x")
    with pytest.raises(ShrinkError, match="s3://shrink-test/absent.json: no such object"):
        storage.get_json("s3://shrink-test/absent.json")


def test_dataset_from_s3(seaweed, tmp_path, clinc_dir):
    s3 = storage.client()
    s3.upload_file(
        str(clinc_dir / "data_oos_plus.json"), "shrink-test", "datasets/clinc150/data_oos_plus.json"
    )
    dd = load_dataset(
        DataConfig(source="s3://shrink-test/datasets/clinc150/data_oos_plus.json", max_per_class=5)
    )
    assert len(dd["train"].features["label"].names) == 151
    dd2 = load_dataset(DataConfig(source="s3://shrink-test/datasets/clinc150/", max_per_class=5))
    assert dd2["test"]["text"] == dd["test"]["text"]
    with pytest.raises(ShrinkError, match="s3://shrink-test/datasets/nothing: no such object or prefix"):
        load_dataset(DataConfig(source="s3://shrink-test/datasets/nothing"))


def test_store_down_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{storage.free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(ShrinkError, match="object store at .* is not reachable"):
        storage.get_json("s3://shrink/anything.json")


def test_store_up_status_down(tmp_path):
    state = tmp_path / "state"
    server = storage.store_up(state, s3_port=storage.free_port())
    try:
        assert storage.store_status(state) is not None
        again = storage.store_up(state)  # idempotent: the running server is reused
        assert again.pid == server.pid and again.s3_port == server.s3_port
        assert (state / "store.env").stat().st_mode & 0o077 == 0  # credentials readable by the owner only
    finally:
        assert storage.store_down(state)
    assert storage.store_status(state) is None
