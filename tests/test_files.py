"""The guarded reader and writer: every OS or decoding failure is one line naming the path."""

import json
import os

import pytest

from shrink import files
from shrink.errors import ShrinkError


def test_read_text_names_what_is_wrong(tmp_path):
    with pytest.raises(ShrinkError, match=r"nope.yaml: no such file"):
        files.read_text(tmp_path / "nope.yaml")
    with pytest.raises(ShrinkError, match=r": is a folder, expected a file"):
        files.read_text(tmp_path)
    (tmp_path / "latin.yaml").write_bytes("a: 1\nb: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ShrinkError, match=r"latin.yaml: not UTF-8 config \(byte 0xe9 at line 2\); save it as UTF-8"):
        files.read_text(tmp_path / "latin.yaml", "config")
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfa: 1\r\n")
    assert files.read_text(tmp_path / "bom.yaml") == "a: 1\r\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes anything")
def test_permission_denied_is_one_line(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text("a: 1")
    path.chmod(0)
    with pytest.raises(ShrinkError, match="secret.yaml: permission denied"):
        files.read_text(path)
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ShrinkError, match="permission denied"):
            files.write_text(tmp_path / "out.yaml", "x")
    finally:
        tmp_path.chmod(0o700)


def test_write_refuses_a_missing_folder_and_a_folder(tmp_path):
    with pytest.raises(ShrinkError, match=r"out.yaml: cannot write: folder .*missing does not exist"):
        files.write_text(tmp_path / "missing" / "out.yaml", "x")
    with pytest.raises(ShrinkError, match=r": is a folder, expected a file name to write"):
        files.write_text(tmp_path, "x")
    (tmp_path / "plain").write_text("")
    with pytest.raises(ShrinkError, match=r"plain is a file, not a folder"):
        files.check_writable(tmp_path / "plain" / "out.yaml")


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    files.write_json(target, {"a": 1})
    files.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_json_refuses_duplicate_keys_and_names_the_line(tmp_path):
    (tmp_path / "d.json").write_text('{"a": 1,\n "b": {"c": 1, "c": 2}}')
    with pytest.raises(ShrinkError, match=r"d.json: duplicate key 'c'"):
        files.read_json(tmp_path / "d.json")
    (tmp_path / "bad.json").write_text('{"a": 1,\n "b": }')
    with pytest.raises(ShrinkError, match=r"bad.json: not valid JSON \(line 2, column 7"):
        files.read_json(tmp_path / "bad.json")


def test_loading_translates_a_third_party_error(tmp_path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{trunc")
    with pytest.raises(ShrinkError, match=r"model.safetensors: cannot load safetensors weights: "):
        files.loading(bad, "safetensors weights", lambda: load_file(bad), (SafetensorError,))


def test_yaml_refuses_duplicate_keys_and_names_the_line(tmp_path):
    (tmp_path / "c.yaml").write_text("name: a\ndata:\n  source: x\n  source: y\n")
    with pytest.raises(ShrinkError, match=r"c.yaml:4: duplicate key 'source'"):
        files.read_yaml(tmp_path / "c.yaml", "config")
    (tmp_path / "bad.yaml").write_text("name: a\ndata: [1,\n")
    with pytest.raises(ShrinkError, match=r"bad.yaml: not valid config: .* \(line 3, column "):
        files.read_yaml(tmp_path / "bad.yaml", "config")
    (tmp_path / "ok.yaml").write_bytes(b"\xef\xbb\xbfname: a\r\nlist: [1, 2]\r\n")
    assert files.read_yaml(tmp_path / "ok.yaml") == {"name": "a", "list": [1, 2]}
