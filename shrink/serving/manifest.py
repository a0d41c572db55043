"""The KServe objects that serve a promoted version on a cluster with ``shrink serve``.

One ``ServingRuntime``, ``shrink-serve`` (``k8s/base/serving.yaml``), runs the
``shrink-serve`` image for every artifact format the gate can promote: ONNX
(FP32, optimized, INT8) and PyTorch (FP32, INT8, sparse and structured-pruned,
each through the loader its ``shrink.json`` names). Off-the-shelf runtimes
cannot: Triton and KServe's Hugging Face server expect the client to tokenize
or a plain ``transformers`` directory, and neither runs shrink's loaders. The
model formats are named ``shrink-<format>`` so that KServe's own ``onnx`` and
``huggingface`` runtimes are never auto-selected for a shrink artifact.

Promotion writes :func:`inference_service` next to every version
(``inferenceservice.yaml``); ``storageUri`` is the version's registry prefix,
which KServe's storage initializer downloads to ``/mnt/models``.
"""

from __future__ import annotations

import re

from shrink.artifact import ArtifactMeta

RUNTIME = "shrink-serve"
# shrink artifact format -> KServe model format the runtime declares.
MODEL_FORMATS = {"onnx": "shrink-onnx", "pytorch": "shrink-pytorch"}
FORMAT_VERSION = "1"
SERVICE_ACCOUNT = "shrink-serving"
HTTP_PORT = 8080


def dns_name(model_name: str) -> str:
    """A Kubernetes object name (RFC 1123 label) for a registry model name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}".rstrip("-")
    return name[:63].rstrip("-")


def inference_service(model_name: str, version: str, uri: str, meta: ArtifactMeta, record: dict | None) -> dict:
    """A KServe v1beta1 InferenceService serving one version on ``shrink-serve``, sized like its benchmark.

    CPU request and limit equal the cores the benchmark used (Guaranteed QoS,
    so serving latency is the latency that was measured), with one worker
    process per core, each on one intra-op thread; the memory limit is twice
    the benchmark's peak RSS per worker, at least 512 Mi.
    """
    cores = int((record or {}).get("hardware", {}).get("cores_used") or 1)
    peak = float((record or {}).get("memory", {}).get("peak_rss_mb") or 0)
    memory = f"{max(512, int(2 * peak * cores) + 1)}Mi"
    name = dns_name(model_name)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "shrink", "shrink.dev/model": name},
            "annotations": {
                "shrink.dev/version": version,
                "shrink.dev/content-hash": meta.content_hash(),
                "shrink.dev/technique": meta.technique,
            },
        },
        "spec": {
            "predictor": {
                "serviceAccountName": SERVICE_ACCOUNT,
                "model": {
                    "modelFormat": {"name": MODEL_FORMATS[meta.format], "version": FORMAT_VERSION},
                    "runtime": RUNTIME,
                    "storageUri": uri,
                    "args": ["--workers", str(cores)],
                    "resources": {
                        "requests": {"cpu": str(cores), "memory": memory},
                        "limits": {"cpu": str(cores), "memory": memory},
                    },
                },
            }
        },
    }
