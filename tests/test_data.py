import json

import pytest

from shrink.config import DataConfig
from shrink.data import load_dataset, load_prepared, prepare, texts_fingerprint
from shrink.errors import ShrinkError
from tests.factories import BANKING, SLICE_LABELS


def test_clinc150_full_counts(clinc_dir):
    dd = load_dataset(DataConfig(source=str(clinc_dir)))
    assert {s: len(dd[s]) for s in dd} == {"train": 15250, "validation": 3100, "test": 5500}
    names = dd["train"].features["label"].names
    assert len(names) == 151 and "oos" in names and names == sorted(names)
    # oos merged into every split
    oos = names.index("oos")
    assert dd["test"]["label"].count(oos) == 1000 and dd["train"]["label"].count(oos) == 250


def test_banking77_carves_stratified_validation_and_loses_nothing():
    dd = load_dataset(DataConfig(source=str(BANKING), seed=7))
    assert len(dd["train"]) + len(dd["validation"]) == 10003 and len(dd["test"]) == 3080
    assert len(dd["train"].features["label"].names) == 77
    assert set(dd["validation"]["label"]) == set(range(77))  # stratified: every class in validation
    again = load_dataset(DataConfig(source=str(BANKING), seed=7))
    assert dd["validation"]["text"] == again["validation"]["text"]  # fixed seed, same carve


def test_label_subset_and_cap(slice_config):
    dd = load_dataset(slice_config)
    assert dd["train"].features["label"].names == sorted(SLICE_LABELS)
    for split in dd:
        counts = {}
        for y in dd[split]["label"]:
            counts[y] = counts.get(y, 0) + 1
        assert max(counts.values()) <= 40


def test_prepared_round_trip(clinc_slice):
    dd, info = load_prepared(clinc_slice)
    assert info.label_names == dd["train"].features["label"].names
    assert info.fingerprints["test"] == texts_fingerprint(dd["test"]["text"])
    assert info.has_oos


def _clinc(tmp_path, payload):
    path = tmp_path / "data_oos_plus.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_bad_clinc_inputs_name_file_and_row(tmp_path):
    with pytest.raises(ShrinkError, match=r"data_oos_plus.json: not valid CLINC150 JSON \(line 1, column 2"):
        load_dataset(DataConfig(source=str(_clinc(tmp_path, "{not json"))))
    good = {"train": [["hi", "greet"]], "val": [["hello", "greet"]], "test": [["hey", "greet"]]}
    bad_row = {**good, "train": [["hi", "greet"], ["", "greet"]]}
    with pytest.raises(ShrinkError, match=r"train\[1\]: row has no text"):
        load_dataset(DataConfig(source=str(_clinc(tmp_path, bad_row))))
    unseen = {**good, "test": [["bye", "farewell"]]}
    with pytest.raises(ShrinkError, match="test labels absent from train: \\['farewell'\\]"):
        load_dataset(DataConfig(source=str(_clinc(tmp_path, unseen))))
    empty = {**good, "val": []}
    with pytest.raises(ShrinkError, match="the validation split is empty"):
        load_dataset(DataConfig(source=str(_clinc(tmp_path, empty))))


def test_bad_csv_inputs(tmp_path):
    (tmp_path / "train.csv").write_text("text,category\nhello,a\n,b\n")
    (tmp_path / "test.csv").write_text("text,category\nhi,a\n")
    with pytest.raises(ShrinkError, match=r"train.csv:3: row has no text"):
        load_dataset(DataConfig(source=str(tmp_path)))
    (tmp_path / "train.csv").write_text("sentence_x,y\nhello,a\n")
    with pytest.raises(ShrinkError, match="train.csv: cannot find a text column"):
        load_dataset(DataConfig(source=str(tmp_path)))
    (tmp_path / "test.csv").unlink()
    with pytest.raises(ShrinkError, match="test.csv: file not found"):
        load_dataset(DataConfig(source=str(tmp_path)))


def test_missing_source_and_unknown_subset(tmp_path, clinc_dir):
    with pytest.raises(ShrinkError, match="nowhere: dataset not found"):
        load_dataset(DataConfig(source=str(tmp_path / "nowhere")))
    with pytest.raises(ShrinkError, match="labels not in the training split"):
        load_dataset(DataConfig(source=str(clinc_dir), labels=["no_such_intent"]))


def test_hub_offline_fails_fast(monkeypatch):
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(ShrinkError, match="hf:clinc_oos/plus: the Hugging Face hub .* is unreachable"):
        load_dataset(DataConfig(source="hf:clinc_oos/plus"))
    assert time.monotonic() - start < 10


def test_save_to_disk_source(tmp_path, slice_config):
    dd = load_dataset(slice_config)
    dd.save_to_disk(str(tmp_path / "saved"))
    again = load_dataset(DataConfig(source=str(tmp_path / "saved")))
    assert again["test"]["text"] == dd["test"]["text"]
    assert again["train"].features["label"].names == dd["train"].features["label"].names


def test_prepare_writes_info(tmp_path, slice_config):
    info = prepare(slice_config, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "shrink-data.json").read_text())["counts"] == info.counts


def _csv_dir(tmp_path, train: bytes | str, test: bytes | str = "text,label\nhi,a\nyo,b\n"):
    for name, body in (("train.csv", train), ("test.csv", test)):
        (tmp_path / name).write_bytes(body if isinstance(body, bytes) else body.encode())
    return DataConfig(source=str(tmp_path), validation_fraction=0.5)


def test_csv_with_bom_and_crlf_is_read(tmp_path):
    """Excel's UTF-8 CSV: a byte-order mark before the header and CRLF line ends, a quoted comma and newline."""
    train = '\ufefftext,label\r\nhello there,a\r\n"hi, you",a\r\nbye,b\r\n"so\r\nlong",b\r\n'
    dd = load_dataset(_csv_dir(tmp_path, train.encode("utf-8")))
    assert dd["train"].features["label"].names == ["a", "b"]
    texts = list(dd["train"]["text"]) + list(dd["validation"]["text"])
    assert sorted(texts) == sorted(["hello there", "hi, you", "bye", "so\r\nlong"])


def test_csv_row_with_the_wrong_number_of_fields_names_its_line(tmp_path):
    with pytest.raises(ShrinkError, match=r"train.csv:3: 3 fields where the header has 2"):
        load_dataset(_csv_dir(tmp_path, "text,label\nhello,a\nhi, you,b\nbye,b\n"))
    with pytest.raises(ShrinkError, match=r"train.csv:2: 1 fields where the header has 2"):
        load_dataset(_csv_dir(tmp_path, "text,label\nhello\nbye,b\n"))
    with pytest.raises(ShrinkError, match=r"train.csv:1: column 'label' appears more than once"):
        load_dataset(_csv_dir(tmp_path, "text,label,label\nhello,a,b\n"))


def test_not_utf8_is_named(tmp_path):
    with pytest.raises(ShrinkError, match=r"train.csv: not UTF-8 CSV \(byte 0xe9 at line 2\)"):
        load_dataset(_csv_dir(tmp_path, "text,label\ncaf\xe9,a\n".encode("latin-1")))


def test_duplicate_json_key_is_refused(tmp_path):
    payload = '{"train": [["hi", "a"], ["yo", "b"]], "val": [["hey", "a"]], "test": [["ho", "b"]], "train": []}'
    with pytest.raises(ShrinkError, match=r"data_oos_plus.json: duplicate key 'train'"):
        load_dataset(DataConfig(source=str(_clinc(tmp_path, payload))))


@pytest.mark.parametrize(
    ("label", "kind"),
    [(["a", "b"], "a list"), ({"x": 1}, "an object"), (1.5, "a number with a fraction"), (True, "a boolean")],
)
def test_labels_must_be_strings_or_integers(tmp_path, label, kind):
    good = {"train": [["hi", "a"], ["yo", "b"]], "val": [["hey", "a"]], "test": [["ho", "b"]]}
    bad = {**good, "train": [["hi", "a"], ["yo", label]]}
    with pytest.raises(ShrinkError, match=rf"train\[1\]: label must be a string or an integer, got {kind}"):
        load_dataset(DataConfig(source=str(_clinc(tmp_path, bad))))


def test_integer_labels_become_class_names(tmp_path):
    ints = {"train": [["hi", 0], ["yo", 1]], "val": [["hey", 0]], "test": [["ho", 1]]}
    dd = load_dataset(DataConfig(source=str(_clinc(tmp_path, ints))))
    assert dd["train"].features["label"].names == ["0", "1"]


def test_a_single_class_is_refused(tmp_path):
    one = {"train": [["hi", "a"], ["yo", "a"]], "val": [["hey", "a"]], "test": [["ho", "a"]]}
    with pytest.raises(ShrinkError, match=r"training split has 1 class \(\[.a.\]\); a classifier needs at least two"):
        load_dataset(DataConfig(source=str(_clinc(tmp_path, one))))
    with pytest.raises(ShrinkError, match="at least two"):
        load_dataset(_csv_dir(tmp_path, "text,label\nhi,a\nyo,a\n", "text,label\nho,a\n"))
