"""The Kubernetes deployment (deploy/k8s/) against the schemas: every object of every overlay, as kustomize
renders it, validates against Kubernetes' OpenAPI schemas (kubernetes-validate, strict: unknown fields fail)
and every KEDA ScaledObject against KEDA's CRD schema (vendored, tests/deploy/keda/) plus the metadata keys
of its scalers. Then what no schema knows: autoscaler targets, Service selectors, ConfigMap / PVC references
exist; the KEDA triggers watch the stream, group and topic that the settings name; the HPA's custom metric is
the one the prometheus-adapter rule makes, from the API's own histogram, with a query promtool accepts.
kustomize comes from `kubectl kustomize` (or a `kustomize` binary); without either, the per-file checks
still run and the rendered ones skip."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gpu_core.settings import Settings
from gpu_core.streams import event_topic

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KEDA = Path(__file__).resolve().parent / "keda"
K8S_VERSION = "1.31.0"  # the oldest Kubernetes still in upstream support when written; also checked: latest
OVERLAYS = ["base", "overlays/full", "overlays/full-flink", "overlays/gpu"]
OUR_IMAGES = {"jaikod", "jaikod-flink", "jaikod-cuda"}  # Dockerfile (targets runtime, flink), Dockerfile.cuda


@functools.cache
def keda_schema() -> dict:
    crd = yaml.safe_load((KEDA / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


@functools.cache
def scaler_keys() -> dict[str, dict[str, bool]]:
    return {k: v["keys"] for k, v in json.loads((KEDA / "scaler_metadata.json").read_text())["scalers"].items()}


def validate(doc: dict) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        assert doc["kind"] == "ScaledObject", doc["kind"]
        jsonschema.validate(doc, keda_schema())
        for trig in doc["spec"]["triggers"]:
            keys = scaler_keys()[trig["type"]]
            meta = trig["metadata"]
            assert set(meta) <= set(keys), (doc["metadata"]["name"], sorted(set(meta) - set(keys)))
            assert {k for k, required in keys.items() if required} <= set(meta), trig
            assert all(isinstance(v, str) for v in meta.values()), trig  # KEDA's metadata is map[string]string
    else:
        for version in (K8S_VERSION, kubernetes_validate.latest_version()):
            kubernetes_validate.validate(doc, version, strict=True)


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def resource_files() -> list[Path]:
    """Whole objects (not patches, not kustomizations) under deploy/k8s."""
    return [p for p in sorted(K8S.rglob("*.yaml")) if p.name != "kustomization.yaml" and "patches" not in p.parts]


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_validates(path):
    docs = docs_of(path.read_text())
    assert docs
    for doc in docs:
        validate(doc)


def test_the_schemas_reject_what_they_should():
    """The validators bite: an unknown field, a wrong type, a misspelt KEDA key each fail."""
    (api,) = [d for d in docs_of((K8S / "base" / "api.yaml").read_text()) if d["kind"] == "Deployment"]
    bad = json.loads(json.dumps(api))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicey"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    bad = json.loads(json.dumps(api))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    (so,) = [d for d in docs_of((K8S / "base" / "stream.yaml").read_text()) if d["kind"] == "ScaledObject"]
    bad = json.loads(json.dumps(so))
    bad["spec"]["minReplicaCount"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    bad = json.loads(json.dumps(so))
    bad["spec"]["triggers"][0]["metadata"]["consumergroup"] = bad["spec"]["triggers"][0]["metadata"].pop("consumerGroup")
    with pytest.raises(AssertionError):
        validate(bad)


# ---- rendered overlays ----------------------------------------------------------------------------------
def kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@functools.cache
def render(overlay: str) -> tuple[dict, ...]:
    cmd = kustomize_cmd()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl is installed (kubectl kustomize renders the overlays)")
    out = subprocess.run([*cmd, str(K8S / overlay)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(docs_of(out.stdout))


def by_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d, d["spec"]["template"]


def settings_of(docs) -> Settings:
    env = by_kind(docs, "ConfigMap")["jaikod-settings"]["data"]
    mp = pytest.MonkeyPatch()
    try:
        for k, v in env.items():
            mp.setenv(k, v)
        return Settings()
    finally:
        mp.undo()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_valid_objects_that_fit_together(overlay):
    docs = render(overlay)
    for doc in docs:
        validate(doc)
        assert doc["kind"] == "Namespace" or doc["metadata"].get("namespace") == "jaikod", doc["metadata"]
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    config_maps, claims = by_kind(docs, "ConfigMap"), set(by_kind(docs, "PersistentVolumeClaim"))
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        for name, obj in by_kind(docs, kind).items():
            assert obj["spec"]["scaleTargetRef"]["name"] in workloads, (kind, name)
    pods = {w["metadata"]["name"]: tpl for w, tpl in pod_specs(docs)}
    for name, svc in by_kind(docs, "Service").items():
        sel = svc["spec"]["selector"]
        matched = [w for w, tpl in pods.items() if sel.items() <= tpl["metadata"]["labels"].items()]
        assert matched, f"Service {name} selects no pods"
        named = {p.get("name") for c in pods[matched[0]]["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= named, name
    for workload, tpl in pod_specs(docs):
        spec = tpl["spec"]
        for vol in spec.get("volumes", []):
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in claims, vol
            if "configMap" in vol:
                assert vol["configMap"]["name"] in config_maps, vol
        for c in spec["containers"]:
            for ref in c.get("envFrom", []):
                assert ref["configMapRef"]["name"] in config_maps
            image, _, tag = c["image"].rpartition(":")
            assert image and re.search(r"\d", tag) and tag != "latest", c["image"]  # pinned tags
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]
            if image in OUR_IMAGES:
                assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 10001
                assert c["command"][0] in ("jaikod", "dask"), c["command"]
            if workload["kind"] == "StatefulSet" or "ports" in c:  # servers say when they are ready
                assert "readinessProbe" in c or "livenessProbe" in c, c["name"]


def test_the_redis_stream_triggers_watch_the_stream_the_settings_name():
    docs = render("base")
    s = settings_of(docs)
    redis_url = urlsplit(s.redis_url)
    (so,) = by_kind(docs, "ScaledObject").values()
    kinds = set()
    for trig in so["spec"]["triggers"]:
        m = trig["metadata"]
        assert trig["type"] == "redis-streams"
        assert m["address"] == redis_url.netloc and m["databaseIndex"] == redis_url.path.strip("/")
        assert m["stream"] == s.event_stream and m["consumerGroup"] == s.event_group
        kinds |= {"lag" if "lagCount" in m else "pending" if "pendingEntriesCount" in m else "?"}
    assert kinds == {"lag", "pending"}
    assert by_kind(docs, "Service")["redis"]["metadata"]["namespace"] in redis_url.hostname.split(".")


def test_the_kafka_trigger_watches_the_topic_and_group_of_the_bus():
    docs = render("overlays/full")
    s = settings_of(docs)
    assert s.stack == "full" and s.kafka_bootstrap and s.opensearch_url and s.milvus_uri
    (so,) = by_kind(docs, "ScaledObject").values()
    (trig,) = so["spec"]["triggers"]
    m = trig["metadata"]
    assert trig["type"] == "kafka" and m["bootstrapServers"] == s.kafka_bootstrap
    assert m["topic"] == event_topic(s.event_stream) and m["consumerGroup"] == s.event_group
    assert so["spec"]["maxReplicaCount"] <= s.kafka_partitions  # more consumers than partitions would idle
    for host, svc in ((urlsplit("//" + s.kafka_bootstrap).hostname, "kafka"), (urlsplit(s.opensearch_url).hostname, "opensearch"),
                      (urlsplit(s.milvus_uri).hostname, "milvus")):
        assert host.split(".")[0] == svc and svc in by_kind(docs, "Service"), host


def test_the_flink_variant_runs_one_job_and_no_keda_object():
    docs = render("overlays/full-flink")
    assert by_kind(docs, "ScaledObject") == {}
    stream = by_kind(docs, "Deployment")["jaikod-stream"]
    (c,) = stream["spec"]["template"]["spec"]["containers"]
    assert stream["spec"]["replicas"] == 1 and c["image"].startswith("jaikod-flink:")
    assert c["command"][:4] == ["jaikod", "stream", "--engine", "flink"]
    parallelism = int(c["command"][c["command"].index("--parallelism") + 1])
    assert parallelism <= settings_of(docs).kafka_partitions


def test_the_gpu_overlay_gives_each_dask_worker_a_gpu():
    docs = render("overlays/gpu")
    (c,) = by_kind(docs, "Deployment")["dask-worker"]["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("jaikod-cuda:") and c["command"][:3] == ["dask", "cuda", "worker"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "JAIKOD_DEVICE", "value": "gpu"} in c["env"]
    assert by_kind(docs, "Deployment")["jaikod-api"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("jaikod:")


def test_the_hpa_latency_metric_is_the_adapter_rule_over_the_api_histogram(tmp_path):
    from online.metrics import Metrics

    docs = render("base")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["jaikod-api"]
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    (rule,) = yaml.safe_load(by_kind(docs, "ConfigMap")["prometheus-adapter-jaikod"]["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == pods["metric"]["name"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    assert re.fullmatch(rule["name"]["matches"], series)
    histograms = {m.name for m in Metrics().registry.collect() if m.type == "histogram"}
    assert series.removesuffix("_bucket") in histograms, histograms
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus): the adapter's query is not parsed")
    query = (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", 'namespace="jaikod"')
             .replace("<<.GroupBy>>", "pod"))
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": [
        {"record": "jaikod:request_latency_p99_seconds", "expr": query}]}]}))
    out = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
