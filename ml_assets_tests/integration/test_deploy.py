"""deploy/ checked offline: every manifest against the Kubernetes and CRD schemas, the Helm values
against the chart's schema, and the cluster's Dagster instance and code location loaded for real
(PostgreSQL, the k8s executor) without a cluster."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
import yaml

from ml_assets.events import TOPIC
from ml_assets.settings import PROJECT_ROOT, load_settings
from ml_assets.tenants import Tenant
from ml_assets_tests.conftest import fresh_database

DEPLOY = PROJECT_ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"
K8S_VERSION = "1.33"  # the oldest Kubernetes minor still supported upstream when this was written
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
CLIENT_LABEL = {"ml-assets.io/client": "true"}
CONSUMER_LABEL = {"ml-assets.io/consumer": "true"}


def _load_documents() -> dict[str, dict]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


DOCUMENTS = _load_documents()


def doc(kind: str, name: str) -> dict:
    return next(d for d in DOCUMENTS.values()
                if d["kind"] == kind and d["metadata"]["name"] == name)


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())


def cluster_instance_yaml() -> dict:
    return yaml.safe_load((DEPLOY / "cluster" / "dagster.yaml").read_text())


# --- the validator -------------------------------------------------------------------------


@cache
def _registry():
    """Kubernetes definitions (bundled with kubernetes-validate) plus the vendored CRD schemas."""
    from importlib.resources import files

    from referencing import Registry, Resource

    bundled = files("kubernetes_validate") / "kubernetes-json-schema"
    k8s = json.loads((bundled / f"v{K8S_VERSION}.0-local-strict" / "_definitions.json").read_text())
    resources = [Resource.from_contents(k8s)]
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        if "$id" in schema:
            resources.append(Resource.from_contents(schema))
    return Registry().with_resources((resource.id(), resource) for resource in resources)


def _crd_schema(document: dict) -> dict | None:
    group, _, version = document["apiVersion"].rpartition("/")
    path = SCHEMAS / f"{group}_{version}_{document['kind'].lower()}.json"
    return json.loads(path.read_text()) if group in {"ray.io", "kafka.strimzi.io"} else None


def validation_errors(document: dict) -> list[str]:
    """Why the document would be rejected by strict validation; empty when it is valid."""
    import kubernetes_validate

    schema = _crd_schema(document)
    if schema is None:
        try:
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            return [f"{'.'.join(map(str, error.path))}: {error.message}"]
        return []
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]


def _relax_required(schema, in_then: bool = False):
    """The chart merges its own defaults under these values: a key the values leave out is not
    missing. Conditional requirements (`then`: the launcher type's config) stay."""
    if isinstance(schema, list):
        return [_relax_required(item, in_then) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: _relax_required(value, in_then or key == "then")
            for key, value in schema.items() if key != "required" or in_then}


@cache
def _helm_schema() -> dict:
    text = (SCHEMAS / "dagster-helm-values.schema.json").read_text()
    # the chart points at kubernetesjsonschema.dev (offline here): the same definitions, bundled
    text = re.sub(r"https://kubernetesjsonschema\.dev/v[0-9.]+/_definitions\.json#/definitions/",
                  K8S_DEFINITIONS + "#/$defs/", text)
    return _relax_required(json.loads(text))


def helm_errors(values: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(_helm_schema(), registry=_registry())
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(values)]


# --- every manifest is valid, and the validator does reject -------------------------------


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_manifest_is_valid_against_its_schema(name):
    assert validation_errors(DOCUMENTS[name]) == []


def test_every_kind_in_deploy_is_checked():
    kinds = {d["kind"] for d in DOCUMENTS.values()}
    assert {"RayCluster", "RayService", "Kafka", "KafkaNodePool", "KafkaTopic", "NetworkPolicy",
            "StatefulSet", "Deployment", "Service", "ConfigMap", "Job"} <= kinds


def _broken(kind: str, name: str, edit) -> dict:
    broken = copy.deepcopy(doc(kind, name))
    edit(broken)
    return broken


@pytest.mark.parametrize(("kind", "name", "edit", "complaint"), [
    ("KafkaTopic", "ml.lifecycle", lambda d: d["spec"].update(replicas=0), "less than the minimum"),
    ("KafkaTopic", "ml.lifecycle", lambda d: d["metadata"]["labels"].clear(), "strimzi.io/cluster"),
    ("Kafka", "ml-kafka", lambda d: d["spec"]["kafka"]["listeners"][0].update(type="internl"),
     "is not one of"),
    ("RayCluster", "ml-ray", lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"),
     "'groupName' is a required property"),
    ("RayCluster", "ml-ray", lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]
     ["containers"][0].update(imagePullPolcy="Always"), "'imagePullPolcy' was unexpected"),
    ("RayCluster", "ml-ray", lambda d: d["spec"]["workerGroupSpecs"][1]["template"]["spec"]
     ["containers"][0].update(ports=[{"containerPort": "x"}]), "is not of type 'integer'"),
    ("RayService", "ml-serve", lambda d: d["spec"].update(upgradeStrategy={"type": "Rolling"}),
     "is not one of"),
    ("Deployment", "mlflow", lambda d: d["spec"]["template"]["spec"].update(containerz=[]),
     "containerz"),
    ("NetworkPolicy", "minio-from-code-location", lambda d: d["spec"].update(policyTypes="In"),
     "is not of type"),
])
def test_validation_rejects_a_broken_manifest(kind, name, edit, complaint):
    errors = validation_errors(_broken(kind, name, edit))
    assert errors and any(complaint in e for e in errors), errors


def test_helm_values_are_valid_against_the_chart_schema():
    assert helm_errors(helm_values()) == []


@pytest.mark.parametrize(("edit", "complaint"), [
    (lambda v: v["runLauncher"].update(type="K8sLauncher"), "is not one of"),
    (lambda v: v["runLauncher"]["config"].pop("k8sRunLauncher"), "'k8sRunLauncher' is a required"),
    (lambda v: v["runLauncher"]["config"]["k8sRunLauncher"].update(jobNamespaces="x"),
     "jobNamespaces"),
    (lambda v: v["dagster-user-deployments"]["deployments"][0].update(port="3030"),
     "is not of type 'integer'"),
    (lambda v: v["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
     .update(maxConcurrentRun=8), "maxConcurrentRun"),
])
def test_helm_schema_rejects_broken_values(edit, complaint):
    values = helm_values()
    edit(values)
    errors = helm_errors(values)
    assert errors and any(complaint in e for e in errors), errors


# --- what the manifests promise ------------------------------------------------------------


def test_everything_lives_in_the_platform_namespace():
    namespaced = [d for d in DOCUMENTS.values() if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"ml-platform"}
    launcher = helm_values()["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["jobNamespace"] == doc("Namespace", "ml-platform")["metadata"]["name"]


def _images(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["image"]] if isinstance(node.get("image"), str) else []) + [
            image for value in node.values() for image in _images(value)]
    return [image for value in node for image in _images(value)] if isinstance(node, list) else []


def test_code_runs_from_one_image_everywhere():
    """Code server, runs, steps, MLflow and every Ray pod: one image (the GPU build aside), so
    Ray, Python, MLflow and ml_assets match on both ends of each connection."""
    code = helm_values()["dagster-user-deployments"]["deployments"][0]["image"]
    image = f"{code['repository']}:{code['tag']}"
    ours = [i for d in DOCUMENTS.values() for i in _images(d) if "ml-assets" in i]
    assert ours and set(ours) == {image, image.replace("ml-assets:", "ml-assets-gpu:")}
    assert image in _images(doc("Deployment", "mlflow"))


def test_lifecycle_topic_survives_one_broker_with_acks_all():
    topic, kafka = doc("KafkaTopic", "ml.lifecycle"), doc("Kafka", "ml-kafka")
    pool = doc("KafkaNodePool", "dual")
    assert topic["spec"]["topicName"] == TOPIC  # the topic the relay produces to
    assert topic["spec"]["replicas"] == 3
    assert topic["spec"]["config"]["min.insync.replicas"] == 2
    assert "broker" in pool["spec"]["roles"] and pool["spec"]["replicas"] >= 3
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False


def _lifecycle_prefixes() -> dict[str, str]:
    setup = doc("ConfigMap", "minio-setup")["data"]
    rule = re.search(r'--prefix "([^"]+)"', setup["setup.sh"]).group(1)
    return {tenant: rule.replace("$tenant", tenant) for tenant in setup["TENANTS"].split()}


def test_checkpoint_expiry_rules_cover_each_tenants_checkpoints_and_no_other_tenants():
    from ml_assets.resources.object_store import ObjectStore

    store = ObjectStore(root="/unused", endpoint="http://minio:9000", bucket="ml-assets")
    prefixes = _lifecycle_prefixes()
    assert prefixes
    for tenant, prefix in prefixes.items():
        key = store.path(Tenant(tenant), "checkpoints", "run-1", "epoch_0001", "state.pt")
        assert key.removeprefix("ml-assets/").startswith(prefix)
        # the wrong tenant: a tenant whose key extends this one's is not caught by its rule
        other = store.path(Tenant(f"{tenant}-eu"), "checkpoints", "run-1", "state.pt")
        assert not other.removeprefix("ml-assets/").startswith(prefix)


def _referenced_secrets() -> dict[str, set[str]]:
    """Secret name -> the keys read from it (empty: the whole Secret as env)."""
    found: dict[str, set[str]] = {}

    def walk(node):
        if isinstance(node, dict):
            if "secretKeyRef" in node:
                found.setdefault(node["secretKeyRef"]["name"], set()).add(
                    node["secretKeyRef"]["key"])
            if "secretRef" in node:
                found.setdefault(node["secretRef"]["name"], set())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for document in DOCUMENTS.values():
        walk(document)
    values = helm_values()
    deployments = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for ref in [*deployments[0]["envSecrets"], *launcher["envSecrets"]]:
        found.setdefault(ref["name"], set())
    found.setdefault(values["global"]["postgresqlSecretName"], set()).add("postgresql-password")
    instance = cluster_instance_yaml()["run_launcher"]["config"]
    for name in instance["env_secrets"]:
        found.setdefault(name, set())
    found.setdefault(instance["postgres_password_secret"], set()).add("postgresql-password")
    return found


def test_no_secret_is_in_git_and_the_readme_creates_every_secret_used():
    assert not [name for name, d in DOCUMENTS.items() if d["kind"] == "Secret"]
    readme = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    created = {m.group(1): set(re.findall(r"--from-literal=([A-Za-z0-9_.-]+)=", m.group(2)))
               for m in re.finditer(r"create secret generic (\S+)(.*)", readme)}
    referenced = _referenced_secrets()
    assert set(referenced) == set(created)
    for name, keys in referenced.items():
        assert keys <= created[name], f"secret {name}: README creates {created[name]}"


def _pod_labels() -> dict[str, dict]:
    labels = {}
    for name, document in DOCUMENTS.items():
        spec = document.get("spec", {})
        if document["kind"] == "RayService":
            spec = spec["rayClusterConfig"]
        if document["kind"] in {"RayCluster", "RayService"}:
            groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
            for i, group in enumerate(groups):
                labels[f"{name}[{i}]"] = group["template"]["metadata"].get("labels", {})
        elif "template" in spec:
            labels[name] = spec["template"]["metadata"].get("labels", {})
    values = helm_values()
    labels["helm:code-server"] = values["dagster-user-deployments"]["deployments"][0]["labels"]
    labels["helm:run-and-step-pods"] = values["runLauncher"]["config"]["k8sRunLauncher"]["labels"]
    labels["cluster-dagster.yaml:runs"] = cluster_instance_yaml()["run_launcher"]["config"][
        "labels"]
    return labels


def _admits(policy: dict, labels: dict) -> bool:
    return any(all(labels.get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())
               for rule in policy["spec"]["ingress"] for peer in rule["from"])


def test_only_the_code_location_reaches_mlflow_minio_and_redis():
    code_location = {name for name in _pod_labels() if "ray" in name or name.startswith(
        ("helm:", "cluster-dagster"))}
    labels = _pod_labels()
    assert code_location and all(labels[n].items() >= CLIENT_LABEL.items() for n in code_location)
    for system, also_allowed in (("mlflow", set()), ("redis", set()),
                                 ("minio", {"40-mlflow.yaml:Deployment/mlflow",
                                            "20-minio.yaml:Job/minio-setup"})):
        policy = next(d for d in DOCUMENTS.values() if d["kind"] == "NetworkPolicy"
                      and d["spec"]["podSelector"]["matchLabels"] == {"app": system})
        admitted = {name for name, pod in labels.items() if _admits(policy, pod)}
        assert admitted == code_location | also_allowed, system
    kafka_peers = doc("Kafka", "ml-kafka")["spec"]["kafka"]["listeners"][0]["networkPolicyPeers"]
    assert kafka_peers == [{"podSelector": {"matchLabels": CLIENT_LABEL}},
                           {"podSelector": {"matchLabels": CONSUMER_LABEL}}]


def test_each_consumer_is_a_deployment_that_reaches_kafka_and_postgresql_only():
    from ml_assets.cli import parser
    from ml_assets.consumers import NAMES

    consumers = {name: d for name, d in DOCUMENTS.items()
                 if d["kind"] == "Deployment" and name.startswith("80-consumers.yaml")}
    commands = {}
    for name, deployment in consumers.items():
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["labels"].items() >= CONSUMER_LABEL.items()
        assert not pod["metadata"]["labels"].items() >= CLIENT_LABEL.items(), name
        (container,) = pod["spec"]["containers"]
        args = parser().parse_args(container["command"][1:])  # the CLI takes the command
        commands[args.name] = deployment["spec"]
        env = {e["name"] for e in container["env"]}
        assert "ML_ASSETS_PLATFORM_DB" in env
    assert set(commands) == set(NAMES)
    assert all(spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
               for spec in commands.values())
    labels = {name: labels for name, labels in _pod_labels().items() if name in consumers}
    policies = {d["spec"]["podSelector"]["matchLabels"]["app"]: d for d in DOCUMENTS.values()
                if d["kind"] == "NetworkPolicy"}
    for name, pod in labels.items():
        reached = {system for system, policy in policies.items() if _admits(policy, pod)}
        assert reached == {"postgresql"}, name


def test_ray_images_run_the_pinned_ray_and_torch():
    import ray

    pins = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_pin = next(p for p in pins if p.startswith("ray[")).split("==")[1]
    torch_pin = next(p for p in pins if p.startswith("torch==")).split("==")[1]
    assert ray.__version__ == ray_pin  # the client side: the code location
    for cluster in (doc("RayCluster", "ml-ray")["spec"],
                    doc("RayService", "ml-serve")["spec"]["rayClusterConfig"]):
        assert cluster["rayVersion"] == ray_pin
    assert f'"torch=={torch_pin}"' in (DEPLOY / "Dockerfile").read_text()


def test_ray_cluster_has_autoscaling_cpu_and_gpu_worker_groups():
    spec = doc("RayCluster", "ml-ray")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for group in groups.values():
        assert group["minReplicas"] == 0 < group["maxReplicas"]
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1" == groups["gpu"]["rayStartParams"]["num-gpus"]


def test_rayservice_serve_config_is_a_serve_application_the_code_builds(monkeypatch, tmp_path):
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application
    from ray.serve.schema import ServeDeploySchema

    service = doc("RayService", "ml-serve")["spec"]
    config = ServeDeploySchema.model_validate(yaml.safe_load(service["serveConfigV2"]))
    (application,) = config.applications
    assert application.route_prefix == "/v1"
    pod_env = {"ML_ASSETS_STATE_DIR": str(tmp_path), "ML_ASSETS_S3_ACCESS_KEY": "key",
               "ML_ASSETS_S3_SECRET_KEY": "secret"}  # the volume and Secrets of the Ray pods
    for key, value in {**application.runtime_env["env_vars"], **pod_env}.items():
        monkeypatch.setenv(key, value)
    builder = import_attr(application.import_path)
    assert isinstance(call_user_app_builder_with_args_if_necessary(builder, {}), Application)
    with pytest.raises(ValueError, match="takes no args"):
        builder({"tenant": "acme"})


# --- the cluster's Dagster instance and code location ---------------------------------------


def cluster_settings_env(state_dir: Path) -> dict[str, str]:
    settings = doc("ConfigMap", "ml-assets-settings")["data"]
    secrets = {"ML_ASSETS_S3_ACCESS_KEY": "key", "ML_ASSETS_S3_SECRET_KEY": "secret",
               "ML_ASSETS_FEAST_REDIS": "redis:6379,password=pw,db=0"}  # from the Secrets
    return {**settings, **secrets, "ML_ASSETS_STATE_DIR": str(state_dir)}


def test_settings_configmap_is_configuration_the_code_reads(tmp_path):
    data = doc("ConfigMap", "ml-assets-settings")["data"]
    settings_source = (PROJECT_ROOT / "ml_assets" / "settings.py").read_text()
    instance_env = json.dumps(cluster_instance_yaml())
    unread = [key for key in data if f'"{key}"' not in settings_source
              and f'"{key}"' not in instance_env]
    assert unread == []
    settings = load_settings(cluster_settings_env(tmp_path))
    assert settings.executor == "k8s"
    assert settings.ray_address == "ml-ray-head-svc:6379"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.mlflow_artifact_root is None  # the server proxies artifacts to MinIO
    assert settings.kafka_bootstrap == "ml-kafka-kafka-bootstrap:9092"
    assert (settings.s3_endpoint, settings.s3_bucket) == ("http://minio:9000", "ml-assets")
    assert (settings.serve_host, settings.serve_port) == ("ml-serve-serve-svc", 8000)
    assert settings.serve_ray_address == "ml-serve-head-svc:6379"
    assert not settings.serve_direct_ingress  # KubeRay's Serve: through the serve Service


def test_triton_runs_nvidias_image_with_explicit_model_control_on_onnxruntime(tmp_path):
    from ml_assets.serving.triton import model_config

    deployment, service = doc("Deployment", "triton"), doc("Service", "triton")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert container["image"].endswith("-py3")
    assert "--model-control-mode=explicit" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert deployment["spec"]["replicas"] == 1  # loads must reach the server that serves
    settings = load_settings(cluster_settings_env(tmp_path))
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert settings.triton_url == f"http://{service['metadata']['name']}:{port}"
    assert f"--http-port={port}" in container["args"]
    assert settings.triton_backend == "onnxruntime"
    config = model_config(Tenant("acme"), ["3"], settings.triton_backend)
    assert (config["platform"], config["name"]) == ("onnxruntime_onnx", "acme-churn")
    assert "instance_group" not in config  # Triton puts it on the GPU
    policy = doc("NetworkPolicy", "triton-from-code-location")
    admitted = {name for name, pod in _pod_labels().items() if _admits(policy, pod)}
    assert admitted and all(_pod_labels()[n].items() >= CLIENT_LABEL.items() for n in admitted)
    assert not _admits(policy, {"app": "mlflow"})


def test_an_unknown_executor_setting_is_named():
    with pytest.raises(ValueError, match="ML_ASSETS_EXECUTOR='kubernetes'"):
        load_settings({"ML_ASSETS_EXECUTOR": "kubernetes"})


@pytest.mark.parametrize("ports", ["abc", "high-low", "31000-30000", "0-10", "30000-70000"])
def test_a_bad_direct_ingress_port_range_is_named(ports):
    with pytest.raises(ValueError, match=f"ML_ASSETS_SERVE_DIRECT_PORTS='{ports}'"):
        load_settings({"ML_ASSETS_SERVE_DIRECT_PORTS": ports})


def test_direct_ingress_ports_from_settings():
    settings = load_settings({"ML_ASSETS_SERVE_DIRECT_PORTS": "32000-32010"})
    assert settings.serve_direct_ports == (32000, 32010)
    assert settings.serve_direct_ingress


def test_code_location_with_cluster_settings_runs_each_step_as_a_kubernetes_job(
        monkeypatch, tmp_path):
    from ml_assets.definitions import defs
    for key, value in cluster_settings_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    job = defs().resolve_job_def("churn_model_job")
    assert job.executor_def.name == "k8s"
    execution = dg.validate_run_config(job, {})["execution"]["k8s"]
    default = execution["step_k8s_config"]["container_config"]["resources"]
    assert default["requests"] == {"cpu": "500m", "memory": "2Gi"}
    steps = execution["per_step_k8s_config"]
    # every override names a step of the graph (a renamed asset would silently lose its size)
    assert {"churn__training_features", "churn__trained_model",
            "churn__deployed_endpoint"} <= set(steps)
    assert set(steps) <= {"__".join(key.path) for key in defs().resolve_all_asset_keys()}
    training = steps["churn__trained_model"]["container_config"]["resources"]
    assert training["requests"] == {"cpu": "1", "memory": "4Gi"}
    for serving in ("churn__deployed_endpoint", "churn__triton_endpoint"):  # set routes
        serving_env = steps[serving]["container_config"]["env"]
        assert serving_env == [{"name": "RAY_ADDRESS", "value": "ml-serve-head-svc:6379"}]
    assert "env" not in steps["churn__trained_model"]["container_config"]
    # every step pod joins the Ray cluster at its RAY_ADDRESS before dagster runs the step
    for config in [execution["step_k8s_config"], *steps.values()]:
        command = config["container_config"]["command"]
        assert command[:2] == ["/bin/bash", "-c"]
        assert 'ray start --address="$RAY_ADDRESS" --num-cpus=0' in command[2]
        assert command[2].endswith('exec "$@"')


def test_step_pod_command_joins_then_runs_the_step(tmp_path):
    """The join command, run by bash as the container would, with a stand-in `ray` on PATH that
    records its arguments: it joins first, then execs dagster's args (exit code passed on)."""
    from ml_assets.executor import JOIN_RAY_CLUSTER

    (tmp_path / "ray").write_text('#!/bin/bash\necho "$@" > "$(dirname "$0")/joined"\n')
    (tmp_path / "ray").chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "RAY_ADDRESS": "ml-ray-head-svc:6379"}
    step = subprocess.run([*JOIN_RAY_CLUSTER, "sh", "-c", "echo step; exit 3"], env=env,
                          capture_output=True, text=True)
    assert (step.returncode, step.stdout) == (3, "step\n")
    assert (tmp_path / "joined").read_text().split()[:2] == ["start",
                                                             "--address=ml-ray-head-svc:6379"]
    (tmp_path / "ray").write_text("#!/bin/bash\nexit 1\n")  # the cluster cannot be joined
    failed = subprocess.run([*JOIN_RAY_CLUSTER, "sh", "-c", "echo step"], env=env,
                            capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stdout == ""  # the step never runs


def test_code_location_by_default_forks_steps_from_a_preloaded_server(monkeypatch, tmp_path):
    from ml_assets.definitions import defs
    from ml_assets.executor import PRELOAD_MODULES

    monkeypatch.setenv("ML_ASSETS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("ML_ASSETS_EXECUTOR", raising=False)
    job = defs().resolve_job_def("churn_model_job")
    assert job.executor_def.name == "multiprocess"
    default = dg.validate_run_config(job, {})["execution"]["multiprocess"]
    assert default["start_method"] == {"forkserver": {"preload_modules": PRELOAD_MODULES}}
    spawn = dg.validate_run_config(job, {"execution": {"config": {"start_method": "spawn"}}})
    assert spawn["execution"]["multiprocess"]["start_method"] == {"spawn": {}}


@pytest.fixture
def in_cluster_pod(monkeypatch, tmp_path):
    """What Kubernetes gives every pod: the API address in env, a service-account token and CA
    bundle on disk (here in a temp folder; nothing talks to an API server)."""
    from kubernetes.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("service-account-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")


def test_cluster_instance_launches_kubernetes_jobs_and_stores_in_postgres(
        in_cluster_pod, monkeypatch, tmp_path):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((DEPLOY / "cluster" / "dagster.yaml").read_text())
    with fresh_database() as database:
        for key, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432",
                           "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": "",
                           "DAGSTER_PG_DB": database}.items():
            monkeypatch.setenv(key, value)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            launcher = instance.run_launcher
            assert isinstance(launcher, K8sRunLauncher)
            assert launcher.job_namespace == "ml-platform"
            assert launcher.env_config_maps == ["ml-assets-settings"]
            assert launcher.labels == {"ml-assets.io/client": "true",
                                       "ml-assets.io/dagster-instance": "true"}
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
            # the storage is live: a run written through this instance is in PostgreSQL
            run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
            assert instance.get_run_by_id(run.run_id).job_name == "noop"


def test_cluster_instance_is_what_the_helm_values_render():
    launcher = cluster_instance_yaml()["run_launcher"]["config"]
    values = helm_values()
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    code_server = values["dagster-user-deployments"]["deployments"][0]
    assert launcher["job_namespace"] == chart["jobNamespace"]
    assert launcher["env_config_maps"] == [r["name"] for r in chart["envConfigMaps"]]
    assert launcher["env_secrets"] == [r["name"] for r in chart["envSecrets"]]
    assert launcher["labels"] == chart["labels"] == code_server["labels"]
    assert launcher["volumes"] == chart["volumes"] == code_server["volumes"]
    assert launcher["volume_mounts"] == chart["volumeMounts"] == code_server["volumeMounts"]
    assert launcher["postgres_password_secret"] == values["global"]["postgresqlSecretName"]
    assert (launcher["run_k8s_config"]["container_config"]
            == chart["runK8sConfig"]["containerConfig"])
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator = cluster_instance_yaml()["run_coordinator"]["config"]
    assert coordinator["max_concurrent_runs"] == queued["maxConcurrentRuns"]
    assert coordinator["tag_concurrency_limits"] == queued["tagConcurrencyLimits"]


def test_feast_registry_on_postgres_keeps_each_tenant_in_its_own_project(monkeypatch, tmp_path):
    """The cluster's Feast registry (ML_ASSETS_FEAST_REGISTRY): one PostgreSQL database, a Feast
    project per tenant, and the point-in-time join unchanged on top of it."""
    import pandas as pd
    import psycopg2

    from ml_assets import use_case
    from ml_assets.data import churn_data
    from ml_assets.data.feature_store import feast_project
    from ml_assets.resources import build_resources
    from ml_assets.schema import LABEL_TIMESTAMP, TIMESTAMP

    tenants = [Tenant("acme"), Tenant("globex")]
    with fresh_database() as database:
        url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
        monkeypatch.setenv("ML_ASSETS_FEAST_REGISTRY", url)
        settings = load_settings({"ML_ASSETS_STATE_DIR": str(tmp_path),
                                  "ML_ASSETS_FEAST_REGISTRY": url})
        unresolved = build_resources(settings)["feast"]
        assert url not in repr(unresolved)  # a secret: the UI shows the variable's name
        feast = unresolved.process_config_and_initialize()
        for seed, tenant in enumerate(tenants):
            spec = churn_data.ChurnDataSpec(customers=200, seed=seed)
            churn_data.write(tenant.key, spec, settings.raw_data_dir)
        churn = use_case.load("churn")
        labels = pd.read_parquet(feast.source_path(tenants[0], churn, churn.label.name)).rename(
            columns={LABEL_TIMESTAMP: TIMESTAMP})
        assert len(feast.historical_features(tenants[0], churn, labels)) == len(labels)
        feast.apply(tenants[1], churn)
        for tenant in tenants:
            views = feast.store(tenant, churn).list_feature_views()
            # the wrong tenant's view is not visible, and no view reads another tenant's file
            assert [v.batch_source.path for v in views] == [
                str(feast.source_path(tenant, churn, "customer_activity").resolve())]
            assert not (feast.repo_dir(tenant, churn) / "registry.db").exists()
        with psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database) as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT DISTINCT project_id FROM feature_views")
                assert {row[0] for row in cursor} == {feast_project(t, churn) for t in tenants}
        conn.close()


def test_alertmanager_configs_are_valid_for_alertmanager_itself(tmp_path):
    """`amtool check-config` (Debian's, beside the Alertmanager the alert tests run) on the
    cluster's ConfigMap and on `make dev`'s file."""
    import shutil
    import subprocess

    amtool = shutil.which("amtool")
    assert amtool, "amtool comes with prometheus-alertmanager: `make alertmanager`"
    cluster = tmp_path / "alertmanager.yml"
    cluster.write_text(doc("ConfigMap", "alertmanager-config")["data"]["alertmanager.yml"])
    for path in (cluster, PROJECT_ROOT / "deploy" / "dev" / "alertmanager.yml"):
        checked = subprocess.run([amtool, "check-config", str(path)], capture_output=True,
                                 text=True)
        assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout
    settings = load_settings(cluster_settings_env(tmp_path))
    assert settings.alertmanager_url == "http://alertmanager:9093"
