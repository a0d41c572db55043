import json
import os
import shutil
import statistics
import warnings

import numpy as np
import pytest
import torch

from shrink.artifact import read_meta, write_artifact
from shrink.benchmark import (
    MB,
    accuracy_report,
    bootstrap_ci,
    confusion_matrix,
    count_parameters,
    percentiles,
    pinned_cpus,
    run_benchmark,
    size_report,
)
from shrink.config import BenchmarkConfig, from_dict
from shrink.errors import ShrinkError
from shrink.hardware import fingerprint, hardware_info, same_hardware
from shrink.record import SCHEMA

# Smallest settings that still exercise every measurement.
FAST = BenchmarkConfig(warmup=3, latency_samples=30, batch_sizes=[4], throughput_queries=8, bootstrap_resamples=50)
RECORD_KEYS = {
    "schema",
    "candidate",
    "artifact",
    "label_names",
    "dataset",
    "accuracy",
    "latency_ms",
    "throughput_qps",
    "size",
    "memory",
    "load_time_s",
    "threads",
    "hardware",
    "cost",
    "created",
    "duration_s",
    "oos",
}


@pytest.fixture(scope="module")
def labels(clinc_slice):
    from shrink.data import load_prepared

    return load_prepared(clinc_slice)[1].label_names


@pytest.fixture(scope="module")
def fitted_model_dir(tmp_path_factory, tiny_model_dir, clinc_slice):
    """The tiny BERT with a ridge-regression head fitted on the slice's train split (a second, no training loop).

    Its random encoder's pooled features still separate the intents (about 0.7 test
    accuracy): predictions vary by query, which is what shows they line up with the labels.
    """
    from shrink.data import load_prepared
    from shrink.models import load_classifier, load_tokenizer

    dd, info = load_prepared(clinc_slice)
    model, tokenizer = load_classifier(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    with torch.no_grad():
        enc = tokenizer(list(dd["train"]["text"]), padding=True, return_tensors="pt")
        x = model.bert(**enc).pooler_output.double().numpy()
    y = np.eye(len(info.label_names))[dd["train"]["label"]]
    mu, sd = x.mean(0), x.std(0) + 1e-12
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + np.eye(z.shape[1]), z.T @ (y - y.mean(0))) / sd[:, None]
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(w.T))
        model.classifier.bias.copy_(torch.from_numpy(y.mean(0) - mu @ w))
    out = tmp_path_factory.mktemp("bench") / "fitted"
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def torch_artifact(tmp_path_factory, fitted_model_dir, labels):
    from shrink.models import load_classifier, load_tokenizer, save_classifier

    out = tmp_path_factory.mktemp("bench") / "tiny"
    save_classifier(
        load_classifier(fitted_model_dir),
        load_tokenizer(fitted_model_dir),
        out,
        label_names=labels,
        technique="fine-tune",
    )
    return out


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory, fitted_model_dir, labels):
    """The fitted tiny model exported to ONNX (TorchScript exporter: about a second) with its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from shrink.models import load_tokenizer

    out = tmp_path_factory.mktemp("bench") / "tiny-onnx"
    out.mkdir()
    auto = AutoModelForSequenceClassification
    model = auto.from_pretrained(str(fitted_model_dir), attn_implementation="eager").eval()
    ids = torch.ones(1, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notices
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(out / "model.onnx"),
            input_names=names,
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
        )
    load_tokenizer(fitted_model_dir).save_pretrained(str(out))
    write_artifact(
        out,
        format="onnx",
        precision="fp32",
        label_names=labels,
        technique="onnx-export",
        runtime={"intra_op_threads": 1, "inter_op_threads": 1, "graph_optimization_level": "all"},
    )
    return out


# --------------------------------------------------------------------------- latency statistics


def test_percentiles_on_known_timings():
    timings = list(range(100, 0, -1))  # 1..100 ms, in reverse: order must not matter
    p = percentiles(timings)
    # numpy's linear interpolation: position q/100 * (n - 1) between sorted values.
    assert p["p50"] == pytest.approx(50.5)
    assert p["p95"] == pytest.approx(95.05)
    assert p["p99"] == pytest.approx(99.01)
    assert p["mean"] == pytest.approx(50.5)
    assert p["std"] == pytest.approx(statistics.stdev(timings))
    assert p["samples"] == 100
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0, "mean": 7.0, "std": 0.0, "samples": 1}
    with pytest.raises(ValueError):
        percentiles([])


def test_bootstrap_ci_brackets_the_estimate_and_narrows_with_samples():
    rng = np.random.default_rng(1)
    small = rng.lognormal(1.0, 0.3, 200)
    large = rng.lognormal(1.0, 0.3, 5000)
    lo, hi = bootstrap_ci(small, 50, resamples=500)
    assert lo <= np.percentile(small, 50) <= hi
    lo95, hi95 = bootstrap_ci(small, 95, resamples=500)
    assert lo95 <= np.percentile(small, 95) <= hi95 and lo95 > hi  # p95's interval sits above p50's
    big_lo, big_hi = bootstrap_ci(large, 50, resamples=500)
    assert big_hi - big_lo < (hi - lo) / 2  # 25x the samples: about a fifth of the width
    assert bootstrap_ci(small, 50, resamples=500) == (lo, hi)  # seeded: reproducible
    assert bootstrap_ci([3.0] * 50, 95, resamples=100) == (3.0, 3.0)


# --------------------------------------------------------------------------- accuracy


def test_accuracy_report_on_a_hand_made_case():
    names = ["a", "b", "oos"]
    #        0  1  2  3  4  5  6  7  8  9
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
    y_pred = [0, 0, 2, 1, 2, 2, 2, 0, 2, 1]
    r = accuracy_report(y_true, y_pred, names)
    assert r["accuracy"] == pytest.approx(7 / 10)
    assert r["in_scope_accuracy"] == pytest.approx(4 / 6)  # indices 0, 1, 3, 9 of the six in-scope ones
    assert r["oos_recall"] == pytest.approx(3 / 4)  # oos at 5, 6, 8 found; 7 missed
    assert r["oos_precision"] == pytest.approx(3 / 5)  # predicted oos at 2, 4, 5, 6, 8
    assert r["per_class"] == pytest.approx({"a": 2 / 3, "b": 2 / 3, "oos": 3 / 4})
    # F1: a = (P 2/3, R 2/3) -> 2/3; b = (P 1, R 2/3) -> 0.8; oos = (P 0.6, R 0.75) -> 2/3.
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    assert r["majority_fraction"] == pytest.approx(5 / 10)  # oos predicted 5 times
    assert r["per_class_support"] == {"a": 3, "b": 3, "oos": 4}
    assert set(r) == {
        "accuracy",
        "in_scope_accuracy",
        "oos_recall",
        "oos_precision",
        "macro_f1",
        "per_class",
        "per_class_support",
        "majority_fraction",
    }


def test_accuracy_report_without_oos_and_with_an_absent_class():
    r = accuracy_report([0, 0, 1, 1], [0, 0, 0, 0], ["x", "y", "z"])
    assert r["in_scope_accuracy"] is None and r["oos_recall"] is None and r["oos_precision"] is None
    assert r["per_class"] == {"x": 1.0, "y": 0.0, "z": None}  # z: no test example
    # x: P 0.5, R 1 -> 2/3; y: never predicted -> 0; z: neither true nor predicted, left out (as sklearn).
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert r["majority_fraction"] == 1.0  # collapsed onto one class


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 0], 3)


def test_paired_difference_counts_the_texts_only_one_model_gets_right():
    from shrink.metrics import paired_difference

    truth = [0] * 12
    # A right on 0-8, B right on 0-3 and 9: A alone on 4-8 (5 texts), B alone on 9 (1 text).
    a = [0] * 9 + [1, 1, 1]
    b = [0] * 4 + [1] * 5 + [0, 1, 1]
    r = paired_difference(truth, a, b)
    assert (r["a_only"], r["b_only"]) == (5, 1)
    assert r["difference"] == pytest.approx(4 / 12)
    # Exact two-sided binomial on 6 discordant pairs: 2 * P(X <= 1) = 2 * 7/64.
    assert r["p_value"] == pytest.approx(14 / 64)
    swapped = paired_difference(truth, b, a)
    assert (swapped["a_only"], swapped["b_only"], swapped["p_value"]) == (1, 5, r["p_value"])
    assert paired_difference(truth, a, a)["p_value"] == 1.0
    # 20 texts, all for A: far from chance.
    assert paired_difference([0] * 20, [0] * 20, [1] * 20)["p_value"] == pytest.approx(2 / 2**20)
    with pytest.raises(ValueError):
        paired_difference([0, 1], [0], [0, 1])


# --------------------------------------------------------------------------- size


def test_size_and_nonzero_counts_are_exact_after_zeroing_weights(tmp_path, tiny_model_dir, labels):
    from safetensors.torch import load_file

    from shrink.models import load_classifier, load_tokenizer, save_classifier

    model = load_classifier(tiny_model_dir)
    with torch.no_grad():
        before = sum(int(torch.count_nonzero(p)) for p in model.state_dict().values())
        w = model.bert.encoder.layer[0].attention.self.query.weight
        zeroed = int(torch.count_nonzero(w[:5]))  # five rows of 64 random weights: all non-zero
        w[:5] = 0.0
        model.classifier.weight[0, :3] = -0.0  # negative zero is a zero weight too
        zeroed += 3
    art = save_classifier(model, load_tokenizer(tiny_model_dir), tmp_path / "m", label_names=labels, technique="prune")
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    expected_params = sum(t.numel() for t in tensors.values())
    size = size_report(tmp_path / "m")
    assert size["parameters"] == expected_params
    assert size["nonzero_parameters"] == before - zeroed
    assert size["nonzero_parameters"] == sum(int(torch.count_nonzero(t)) for t in tensors.values())
    assert size["model_bytes"] == (tmp_path / "m" / "model.safetensors").stat().st_size
    assert size["model_mb"] == size["model_bytes"] / MB
    assert size["artifact_bytes"] > size["model_bytes"]  # tokenizer, config and shrink.json on top
    assert art.files  # sealed after the weights were zeroed


def test_counts_every_safetensors_dtype_bit_exactly(tmp_path):
    from safetensors.torch import save_file

    out = tmp_path / "m"
    out.mkdir()
    save_file(
        {
            "f32": torch.tensor([0.0, -0.0, 1.5, 2.0]),
            "bf16": torch.tensor([[0.0, -0.0, 3.0], [1e-30, 0.0, -2.0]], dtype=torch.bfloat16),
            "f16": torch.tensor([0.0, 5e-8, -1.0], dtype=torch.float16),  # 5e-8 is a subnormal, not zero
            "i8": torch.tensor([0, -128, 0, 7, 0], dtype=torch.int8),
        },
        str(out / "model.safetensors"),
    )
    write_artifact(out, format="pytorch", precision="int8", label_names=["a", "b"], technique="t")
    assert count_parameters(out) == (4 + 6 + 3 + 5, 2 + 3 + 2 + 2)


def _onnx_linear(path, external=False):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.float32).reshape(4, 3)  # one zero at [0, 0]
    w[1, :] = 0.0  # three more
    b = np.array([-0.0, 1.0, 2.0], dtype=np.float32)  # -0.0 counts as zero
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )


@pytest.mark.parametrize("external", [False, True])
def test_onnx_initializers_counted_exactly(tmp_path, external):
    _onnx_linear(tmp_path / "model.onnx", external)
    meta = write_artifact(tmp_path, format="onnx", precision="fp32", label_names=["a", "b", "c"], technique="t")
    assert ("model.onnx.data" in meta.files) == external
    size = size_report(tmp_path)
    assert (size["parameters"], size["nonzero_parameters"]) == (15, 15 - 4 - 1)
    weight_files = ["model.onnx", "model.onnx.data"] if external else ["model.onnx"]
    assert size["model_bytes"] == sum((tmp_path / f).stat().st_size for f in weight_files)


# --------------------------------------------------------------------------- refusals (nothing measured)


def test_refuses_labels_that_differ_from_the_dataset(tmp_path, clinc_slice, minilm_dir, labels):
    from shrink.models import load_classifier, load_tokenizer, save_classifier, tiny_bert

    other = [*labels[:-1], "transfer"]
    hf = tiny_bert(other, minilm_dir, tmp_path / "hf", layers=1)
    save_classifier(load_classifier(hf), load_tokenizer(hf), tmp_path / "m", label_names=other, technique="t")
    with pytest.raises(ShrinkError, match=r"shrink.json: label names disagree .*'what_is_your_name'"):
        run_benchmark(tmp_path / "m", clinc_slice, FAST, "student")


def test_refuses_a_tampered_artifact(tmp_path, torch_artifact, clinc_slice):
    bad = tmp_path / "tampered"
    shutil.copytree(torch_artifact, bad)
    weights = bad / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit in the middle of the weights
    weights.write_bytes(bytes(blob))
    with pytest.raises(ShrinkError, match=r"model.safetensors: sha256 mismatch"):
        run_benchmark(bad, clinc_slice, FAST, "student")


def test_refuses_an_unknown_loader(tmp_path, torch_artifact, clinc_slice):
    bad = tmp_path / "unknown"
    shutil.copytree(torch_artifact, bad)
    meta = read_meta(bad)
    write_artifact(
        bad,
        format="pytorch",
        precision="int8",
        label_names=meta.label_names,
        technique="quantize",
        extra={"loader": "shrink.no_such_format:load"},
    )
    with pytest.raises(ShrinkError, match=r"unknown format: loader 'shrink.no_such_format:load'"):
        run_benchmark(bad, clinc_slice, FAST, "torch_int8")
    write_artifact(
        bad,
        format="pytorch",
        precision="int8",
        label_names=meta.label_names,
        technique="quantize",
        extra={"loader": "shrink.metrics:no_such_loader"},
    )
    with pytest.raises(ShrinkError, match=r"unknown format: loader 'shrink.metrics:no_such_loader'"):
        run_benchmark(bad, clinc_slice, FAST, "torch_int8")


def test_workers_are_pinned_to_the_last_cores():
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) > 1:
        assert pinned_cpus(1) == allowed[-1:]
    assert pinned_cpus(len(allowed)) is None  # every core: nothing to pin


def test_config_rejects_nonsense():
    with pytest.raises(ShrinkError, match=r"benchmark.latency_rounds: must be <= latency_samples \(2\)"):
        from_dict(BenchmarkConfig, {"latency_samples": 2, "latency_rounds": 3}, "benchmark")
    with pytest.raises(ShrinkError, match=r"benchmark.latency_rounds: must be >= 1"):
        from_dict(BenchmarkConfig, {"latency_rounds": 0}, "benchmark")
    with pytest.raises(ShrinkError, match=r"benchmark.batch_sizes: each must be >= 1"):
        from_dict(BenchmarkConfig, {"batch_sizes": [8, 0]}, "benchmark")
    with pytest.raises(ShrinkError, match=r"benchmark: unknown key 'latency_sample'"):
        from_dict(BenchmarkConfig, {"latency_sample": 10}, "benchmark")


# --------------------------------------------------------------------------- a real run (ONNX)


def test_onnx_candidate_end_to_end_in_a_fresh_process(onnx_artifact, clinc_slice):
    import psutil

    from shrink.data import load_prepared
    from shrink.runtime import open_classifier

    ballast = np.ones(256 * MB // 8)  # this process grows; the worker's peak must not include it
    parent_rss = psutil.Process().memory_info().rss / MB
    record = run_benchmark(onnx_artifact, clinc_slice, FAST, "onnx_fp32", model_uri="s3://b/onnx")
    del ballast

    assert set(record) == RECORD_KEYS and record["schema"] == SCHEMA
    assert record["artifact"]["format"] == "onnx" and record["artifact"]["uri"] == "s3://b/onnx"
    assert record["artifact"]["content_hash"] == read_meta(onnx_artifact).content_hash()
    dd, info = load_prepared(clinc_slice)
    assert record["dataset"]["examples"] == len(dd["test"])
    assert record["dataset"]["fingerprint"] == info.fingerprints["test"]  # whole split, in dataset order

    # The worker's predictions line up with the labels: far above chance (1/11), and what the same
    # runtime predicts here one query at a time, as served (batches may flip a near-tie or two).
    acc = record["accuracy"]
    assert acc["accuracy"] > 0.5 and acc["majority_fraction"] < 0.3
    clf = open_classifier(onnx_artifact, threads=1)
    texts = list(dd["test"]["text"])
    served = accuracy_report(dd["test"]["label"], [int(clf.predict([t])[0]) for t in texts], info.label_names)
    for key in ("accuracy", "in_scope_accuracy", "oos_recall", "majority_fraction"):
        assert acc[key] == pytest.approx(served[key], abs=2 / len(texts)), key
    # No oos rule in this artifact: the served figures are the bare argmax's.
    assert record["oos"] is None and all(acc["raw"][k] == acc[k] for k in ("accuracy", "oos_recall"))

    lat = record["latency_ms"]
    assert lat["samples"] == 30 and lat["warmup"] == 3
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert lat["p50_ci95"][0] <= lat["p50"] <= lat["p50_ci95"][1]
    assert 0 < lat["model_p50"] < lat["p50"]  # tokenization is part of a request, not of the model time
    assert set(record["throughput_qps"]) == {"4"} and record["throughput_qps"]["4"] > 0
    # FAST's 30 requests are timed in 3 fresh processes (10 each, continuing the order) and pooled.
    assert lat["rounds"] == 3 and len(lat["round_p50"]) == 3 and lat["round_spread"] >= 0
    assert min(lat["round_p50"]) <= lat["p50"] <= max(lat["round_p50"])
    threads = record["threads"]
    assert threads["intra_op"] == 1 and threads["inter_op"] == 1
    # Pinned to the last core where there is more than one; otherwise the worker keeps every core it may use.
    assert threads["pinned_cpus"] == (pinned_cpus(1) or sorted(os.sched_getaffinity(0)))
    print(f"worker peak RSS {record['memory']['peak_rss_mb']:.0f} MB, this process {parent_rss:.0f} MB")
    assert 50 < record["memory"]["peak_rss_mb"] < parent_rss - 100
    assert record["load_time_s"] > 0
    assert record["cost"]["qps_per_core"] == pytest.approx(1000 / lat["mean"])
    assert record["hardware"]["cores_used"] == 1
    json.dumps(record, allow_nan=False)  # plain JSON, no numpy types or NaN


# --------------------------------------------------------------------------- hardware


def test_hardware_fingerprint_is_stable_and_ignores_library_versions(tmp_path):
    a, b = hardware_info(1), hardware_info(1)
    assert a == b and len(a["fingerprint"]) == 64
    assert same_hardware(a, b) and same_hardware({"hardware": a}, {"hardware": b})
    newer = {**b, "libraries": {**b["libraries"], "onnxruntime": "9.9.9"}}
    assert same_hardware(a, newer)
    assert not same_hardware(a, {"fingerprint": None}) and not same_hardware({}, {})

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel Xeon Platinum 8480+\n"
        "flags\t\t: fpu avx2 avx512f avx512_vnni amx_tile amx_int8 sse4_2\n\n"
        "processor\t: 1\nmodel name\t: Intel Xeon Platinum 8480+\nflags\t\t: fpu\n"
    )
    x = hardware_info(1, cpuinfo)
    assert x["cpu_model"] == "Intel Xeon Platinum 8480+"
    assert x["isa"] == {"avx2": True, "avx512_vnni": True, "avx_vnni": False, "amx": True}
    assert not same_hardware(a, x)
    # Flags that do not matter for inference (fpu, sse4_2) do not change it; VNNI and core count do.
    base = fingerprint("cpu", {"avx2", "avx512_vnni"}, 1)
    assert fingerprint("cpu", {"avx2", "avx512_vnni", "fpu", "sse4_2"}, 1) == base
    assert fingerprint("cpu", {"avx2"}, 1) != base
    assert fingerprint("cpu", {"avx2", "avx512_vnni"}, 2) != base
