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
    s3.upload_file(str(clinc_dir / "data_oos_plus.json"), "shrink-test", "datasets/clinc150/data_oos_plus.json")
    dd = load_dataset(DataConfig(source="s3://shrink-test/datasets/clinc150/data_oos_plus.json", max_per_class=5))
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


def _free_from(start: int, n: int) -> list[int]:
    """``n`` ports free now at or above ``start`` (the high end of the kernel's ephemeral range)."""
    import socket

    found, port = [], start
    while len(found) < n:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                found.append(port)
            except OSError:
                pass
        port += 3
    return found


def test_every_port_is_explicit_distinct_and_valid(tmp_path):
    for s3_port in (8333, None, None, None):
        server = storage.SeaweedServer.on_free_ports(tmp_path, s3_port=s3_port)
        http = [server.master_port, server.volume_port, server.filer_port, server.admin_port]
        grpc = [getattr(server, name) for name in storage.SeaweedServer.GRPC_FIELDS]
        ports = [server.s3_port, *http, *grpc]
        assert len(set(ports)) == 10 and all(0 < p <= 65535 for p in ports), ports
        # SeaweedFS's admin worker dials HTTP + 10000 whatever the flag says: the pair must hold for each.
        assert grpc[:4] == [p + storage.GRPC_OFFSET for p in http]
        if s3_port:
            assert server.s3_port == s3_port
        flags = {arg.split("=")[0]: arg.split("=")[1] for arg in server.command() if "=" in arg}
        for name in ("master", "volume", "filer", "admin", "s3"):
            assert flags[f"-{name}.port.grpc"] == str(getattr(server, f"{name}_grpc_port"))


def test_high_http_ports_never_derive_grpc_ports_beyond_65535(tmp_path):
    """A store.json from before the fix, HTTP ports above 55535: SeaweedFS dialled HTTP+10000 (e.g. 67171)."""
    import re
    import time

    fresh = storage.SeaweedServer.on_free_ports(tmp_path / "weed")
    legacy = {k: v for k, v in fresh.to_state().items() if k not in storage.SeaweedServer.GRPC_FIELDS}
    names = ("s3_port", "master_port", "volume_port", "filer_port", "admin_port")
    legacy.update(zip(names, _free_from(58000, 5), strict=True))
    server = storage.SeaweedServer(**legacy)
    server.start()
    try:
        server.wait_ready(timeout=90)
        time.sleep(3)  # the admin worker's first dials
    finally:
        server.stop()
    assert all(getattr(server, name) <= 65535 for name in storage.SeaweedServer.GRPC_FIELDS)
    assert server.admin_port + storage.GRPC_OFFSET == server.admin_grpc_port
    log = (tmp_path / "weed" / "weed.log").read_text()
    assert "invalid port" not in log and "is not available, finding alternative" not in log
    assert not re.findall(r"\b(?:6553[6-9]|655[4-9]\d|65[6-9]\d\d|6[6-9]\d{3}|[7-9]\d{4})\b", log)
