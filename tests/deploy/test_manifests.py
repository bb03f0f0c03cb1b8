"""deploy/: the Kubernetes manifests, Dockerfiles and Grafana dashboard, checked by parsing.

No cluster and no Docker engine run here, so every file is checked against what reads it:
manifests through the `kubernetes` client's models (a misspelt field fails), the Role
against the API calls mlfe's code makes, the images' commands through mlfe's own argument
parsers, the dashboard's queries against the metrics the code exports.
"""

from __future__ import annotations

import ast
import base64
import importlib
import inspect
import json
import re
import secrets
import shlex
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pydantic
import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.backends import kube_manifests
from autoscaler.backends.base import DeploymentKey, ReplicaTemplate
from router import demand
from router.app import create_app
from router.cli import build_parser
from router.metrics import RouterMetrics
from router.registry import Registry
from scoring_runtime.config import parse_config
from scoring_runtime.metrics import RuntimeMetrics
from scoring_runtime.slots import ScoringSlots

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
PACKAGES = ("router", "autoscaler", "scoring_runtime")
NAMESPACE = "mlfe"
LEASE = "mlfe-autoscaler"

Json = dict[str, Any]


# -- loading -------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


def load_documents(text: str) -> list[Json]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def manifests() -> list[tuple[str, Json]]:
    return [
        (path.name, doc) for path in manifest_files() for doc in load_documents(path.read_text())
    ]


def find(kind: str, docs: list[tuple[str, Json]] | None = None) -> Json:
    found = [doc for _, doc in (docs or manifests()) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kustomization() -> Json:
    loaded: Json = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return loaded


def model_class(doc: Json) -> str:
    """The client's model for a document: `policy/v1` PodDisruptionBudget -> V1PodDisruptionBudget."""
    version = doc["apiVersion"].rsplit("/", 1)[-1]
    name = f"{version[0].upper()}{version[1:]}{doc['kind']}"
    assert hasattr(client, name), f"the kubernetes client has no model {name} for {doc['kind']}"
    return name


def differences(sent: Any, kept: Any, path: str = "") -> Iterator[str]:
    """Where `kept` (the round-tripped document) lost or changed something of `sent`."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key in sent:
            where = f"{path}.{key}" if path else key
            if key not in kept:
                yield f"{where}: not a field of this object (misspelt or misplaced?)"
            else:
                yield from differences(sent[key], kept[key], where)
    elif isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        for index, (a, b) in enumerate(zip(sent, kept, strict=True)):
            yield from differences(a, b, f"{path}[{index}]")
    elif sent != kept or type(sent) is not type(kept):
        yield f"{path}: {sent!r} became {kept!r} (wrong type?)"


def round_trip(doc: Json) -> list[str]:
    """Deserialize through the client's model and back. The models reject a value of the
    wrong type but drop a field they do not know, so a difference from the input is a
    field Kubernetes would reject too."""
    api = client.ApiClient()
    try:
        model = api.deserialize(json.dumps(doc), model_class(doc), "application/json")
    except pydantic.ValidationError as error:
        return [str(error)]
    kept = api.sanitize_for_serialization(model)
    return list(differences(doc, kept))


# -- the manifests ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_manifest_is_a_valid_kubernetes_object(path: Path) -> None:
    docs = load_documents(path.read_text())
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        assert round_trip(doc) == [], f"{path.name} {doc['kind']}"


def test_the_round_trip_catches_a_misspelt_field_and_a_wrong_type() -> None:
    misspelt = find("Deployment")
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert round_trip(misspelt) == [
        "spec.template.spec.containers[0].readinesProbe: not a field of this object"
        " (misspelt or misplaced?)"
    ]
    mistyped = find("Deployment")
    mistyped["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    (error,) = round_trip(mistyped)
    assert "containerPort" in error and "valid integer" in error


def test_the_kustomization_lists_every_manifest_and_nothing_else() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == [p.name for p in manifest_files()]


def test_the_admin_key_comes_from_a_file_the_user_generates_never_a_shipped_one() -> None:
    generator = kustomization()["secretGenerator"]
    assert len(generator) == 1
    envs = generator[0]["envs"]
    assert envs == ["admin-key.env"]
    # Shipped: an example naming the variable. Not shipped: the key itself, which git and
    # Docker build contexts both leave out.
    example = KUBE / "admin-key.env.example"
    assert re.search(r"^MLFE_ADMIN_KEY=", example.read_text(), re.MULTILINE)
    assert "admin-key.env" in (KUBE / ".gitignore").read_text().split()
    assert dockerignored("deploy/kubernetes/admin-key.env")


def test_the_router_deployment_wires_up_with_the_other_objects() -> None:
    docs = manifests()
    deployment, service, pdb = (
        find("Deployment", docs),
        find("Service", docs),
        find("PodDisruptionBudget", docs),
    )
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (container,) = spec["containers"]

    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] == 2
    # The leader finds the other router pods through this Service's EndpointSlices.
    assert service["metadata"]["name"] == demand.ROUTER_SERVICE

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": demand.ROUTER_PORT}
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    assert spec["serviceAccountName"] == find("ServiceAccount", docs)["metadata"]["name"]
    binding = find("RoleBinding", docs)
    assert binding["roleRef"]["name"] == find("Role", docs)["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": NAMESPACE}
    ]

    key_ref = next(e for e in container["env"] if e["name"] == "MLFE_ADMIN_KEY")
    secret_ref = key_ref["valueFrom"]["secretKeyRef"]
    assert secret_ref["name"] == kustomization()["secretGenerator"][0]["name"]
    example = (KUBE / "admin-key.env.example").read_text()
    assert re.search(rf"^{re.escape(secret_ref['key'])}=", example, re.MULTILINE)

    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {find("PersistentVolumeClaim", docs)["metadata"]["name"]}
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts == {v["name"] for v in spec["volumes"]}

    image = container["image"].rsplit(":", 1)[0]
    assert image in {entry["name"] for entry in kustomization()["images"]}
    runtime_image = next(e["value"] for e in container["env"] if e["name"] == "MLFE_RUNTIME_IMAGE")
    assert runtime_image == kube_manifests.DEFAULT_IMAGE


def test_the_router_pods_run_unprivileged() -> None:
    spec = find("Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == image_user("router.Dockerfile") != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    # A read-only root needs somewhere to write: the state dir and /tmp are emptyDirs.
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs}
    assert {"/tmp", "/var/lib/mlfe"} <= writable
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    affinity = spec["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"]


def test_the_router_command_is_one_mlfe_accepts() -> None:
    spec = find("Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert "command" not in container  # the image's ENTRYPOINT is `mlfe`
    assert dockerfile("router.Dockerfile").exec_form("ENTRYPOINT") == ["mlfe"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve"
    assert args.backend == "kubernetes"
    assert args.host == "0.0.0.0"
    assert args.port == container["ports"][0]["containerPort"]
    state_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == args.state_dir)
    assert any(v["name"] == state_mount["name"] and "emptyDir" in v for v in spec["volumes"])


async def test_the_probed_paths_answer_in_the_router_app() -> None:
    app = create_app(Registry(RouterMetrics()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
        container = find("Deployment")["spec"]["template"]["spec"]["containers"][0]
        for probe in ("livenessProbe", "readinessProbe"):
            response = await http.get(container[probe]["httpGet"]["path"])
            assert response.status_code == 200, probe
        annotations = find("Deployment")["spec"]["template"]["metadata"]["annotations"]
        response = await http.get(annotations["prometheus.io/path"])
        assert response.status_code == 200
        assert "mlfe_requests_total" in response.text


needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed"
)


@needs_kubectl
def test_kustomize_renders_valid_objects_in_the_namespace(tmp_path: Path) -> None:
    folder = tmp_path / "kubernetes"
    shutil.copytree(KUBE, folder)
    key = secrets.token_urlsafe(32)
    (folder / "admin-key.env").write_text(f"MLFE_ADMIN_KEY={key}\n")
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = load_documents(rendered)
    for doc in docs:
        assert round_trip(doc) == [], doc["kind"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mlfe"
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == sorted([doc["kind"] for _, doc in manifests()] + ["Secret"])

    secret = next(doc for doc in docs if doc["kind"] == "Secret")
    assert base64.b64decode(secret["data"]["MLFE_ADMIN_KEY"]).decode() == key
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    # kustomize renamed the Secret (content hash) and must have followed the reference.
    assert env["MLFE_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/part-of" not in selector


@needs_kubectl
def test_kustomize_refuses_to_render_without_a_generated_key(tmp_path: Path) -> None:
    folder = tmp_path / "kubernetes"
    shutil.copytree(KUBE, folder)
    (folder / "admin-key.env").unlink(missing_ok=True)
    result = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "admin-key.env" in result.stderr


# -- the Role: exactly the verbs the code uses ------------------------------------------------

Grants = dict[tuple[str, str], set[str]]

# A collection path answers GET with a list and DELETE with deletecollection.
_VERBS = {
    ("GET", True): "get",
    ("GET", False): "list",
    ("POST", False): "create",
    ("PUT", True): "update",
    ("PATCH", True): "patch",
    ("DELETE", True): "delete",
    ("DELETE", False): "deletecollection",
}


@dataclass(frozen=True)
class ClientCall:
    """What one `kubernetes` client method asks of RBAC."""

    group: str
    resource: str  # "deployments/scale" for a subresource
    verb: str
    namespaced: bool


def api_classes() -> dict[str, type]:
    """The client's API classes (CoreV1Api, AppsV1Api, ...); loaded lazily, so by dir()."""
    return {
        name: getattr(client, name)
        for name in dir(client)
        if name.endswith("Api") and name != "ApiClient"
    }


def client_call(api_class: type, method: str) -> ClientCall | None:
    """Read the method's HTTP verb and path from the client's own request builder."""
    builder = getattr(api_class, f"_{method}_serialize", None)
    if builder is None:
        return None
    source = inspect.getsource(builder)
    path_match = re.search(r"resource_path='([^']+)'", source)
    http_match = re.search(r"method='([A-Z]+)'", source)
    assert path_match and http_match, f"cannot read the request of {api_class.__name__}.{method}"
    path = path_match.group(1)
    if path.startswith("/api/v1/"):
        group, rest = "", path.removeprefix("/api/v1/")
    else:
        _, _, group, _, rest = path.split("/", 4)
    parts = rest.split("/")
    namespaced = parts[:2] == ["namespaces", "{namespace}"] and len(parts) > 2
    if namespaced:
        parts = parts[2:]
    named = len(parts) > 1 and parts[1] == "{name}"
    resource = parts[0] + (f"/{parts[2]}" if named and len(parts) > 2 else "")
    verb = _VERBS[(http_match.group(1), named)]
    return ClientCall(group, resource, verb, namespaced)


def package_modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def calls_in_module(path: Path) -> dict[str, ClientCall]:
    """Client methods the module references (called, or handed to a helper that calls
    them), resolved against the API classes the module uses."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    classes = [cls for name, cls in api_classes().items() if name in names]
    found: dict[str, ClientCall] = {}
    for method in sorted(names):
        resolved = {call for cls in classes if (call := client_call(cls, method)) is not None}
        assert len(resolved) <= 1, f"{path}: {method} is ambiguous between API classes"
        if resolved:
            found[method] = resolved.pop()
    return found


def code_calls() -> dict[str, dict[str, ClientCall]]:
    found = {}
    for path in package_modules():
        calls = calls_in_module(path)
        if calls:
            found[str(path.relative_to(REPO))] = calls
    return found


def declared_grants() -> Grants:
    """The union of every module's RBAC_RULES."""
    grants: Grants = defaultdict(set)
    for path in package_modules():
        if not re.search(r"^RBAC_RULES\b", path.read_text(), re.MULTILINE):
            continue
        module_name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        module = importlib.import_module(module_name)
        for rule in module.RBAC_RULES:
            grants[(rule.group, rule.resource)].update(rule.verbs)
    return dict(grants)


def role_grants(role: Json) -> Grants:
    grants: Grants = defaultdict(set)
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants[(group, resource)].update(rule["verbs"])
    return dict(grants)


def test_the_client_method_table_reads_the_client_correctly() -> None:
    assert client_call(client.AppsV1Api, "patch_namespaced_deployment_scale") == ClientCall(
        "apps", "deployments/scale", "patch", True
    )
    assert client_call(client.CoreV1Api, "read_namespaced_pod_log") == ClientCall(
        "", "pods/log", "get", True
    )
    assert client_call(client.CoreV1Api, "list_namespaced_config_map") == ClientCall(
        "", "configmaps", "list", True
    )
    assert client_call(client.CoreV1Api, "delete_collection_namespaced_secret") == ClientCall(
        "", "secrets", "deletecollection", True
    )
    assert client_call(client.CoordinationV1Api, "replace_namespaced_lease") == ClientCall(
        "coordination.k8s.io", "leases", "update", True
    )
    assert client_call(client.CoreV1Api, "list_namespace") == ClientCall(
        "", "namespaces", "list", False
    )


def test_the_role_grants_exactly_what_the_modules_declare() -> None:
    granted = role_grants(find("Role"))
    declared = declared_grants()
    assert declared, "no module declares RBAC_RULES"
    assert granted == declared


def test_the_declared_rules_are_the_calls_the_code_makes() -> None:
    used: Grants = defaultdict(set)
    for module, calls in code_calls().items():
        for method, call in calls.items():
            assert call.namespaced, (
                f"{module} calls {method}, which is cluster-scoped: a namespaced Role cannot"
                " grant it"
            )
            used[(call.group, call.resource)].add(call.verb)
    declared = declared_grants()
    for resource, verbs in used.items():
        missing = verbs - declared.get(resource, set())
        assert not missing, (
            f"the code uses {sorted(missing)} on {resource} but no RBAC_RULES say so"
        )
    for resource, verbs in declared.items():
        # A watch is a list call with watch=True: allowed only where the code lists.
        usable = used.get(resource, set()) | (
            {"watch"} if "list" in used.get(resource, ()) else set()
        )
        unused = verbs - usable
        assert not unused, f"RBAC_RULES grant {sorted(unused)} on {resource}, which no code uses"


def test_role_rules_pinned_to_names_only_hold_verbs_a_name_can_limit() -> None:
    for rule in find("Role")["rules"]:
        if "resourceNames" in rule:
            # RBAC cannot check a name on create, list, watch or deletecollection.
            assert not set(rule["verbs"]) & {"create", "list", "watch", "deletecollection"}


def test_the_lease_the_role_pins_is_the_one_mlfe_elects_on() -> None:
    pinned = {
        name
        for rule in find("Role")["rules"]
        if "leases" in rule["resources"]
        for name in rule.get("resourceNames", [])
    }
    assert pinned == {LEASE}
    electing = [
        path
        for path in package_modules()
        if path.name != "leader.py" and "LeaderElector(" in path.read_text()
    ]
    if not electing:
        pytest.skip("no module starts a LeaderElector yet (`mlfe serve --backend kubernetes`)")
    assert any(f'"{LEASE}"' in path.read_text() for path in electing)


# -- the Dockerfiles -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True)
class Dockerfile:
    stages: list[list[Instruction]]

    @property
    def final(self) -> list[Instruction]:
        return self.stages[-1]

    def last(self, keyword: str) -> str:
        found = [i.arguments for i in self.final if i.keyword == keyword]
        assert found, f"no {keyword} in the final stage"
        return found[-1]

    def exec_form(self, keyword: str) -> list[str]:
        value = json.loads(self.last(keyword))
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value

    def environment(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for instruction in self.final:
            if instruction.keyword == "ENV":
                for pair in shlex.split(instruction.arguments):
                    name, _, value = pair.partition("=")
                    found[name] = value
        return found


def dockerfile(name: str) -> Dockerfile:
    text = (DEPLOY / "docker" / name).read_text()
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, f"{name} ends inside a continued line"
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{name}: {keyword} before FROM"
        stages[-1].append(instruction)
    return Dockerfile(stages)


def image_user(name: str) -> int:
    user = dockerfile(name).last("USER").split(":")[0]
    assert user.isdigit(), "a numeric uid, so runAsNonRoot can verify it"
    return int(user)


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif pattern[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif pattern[index] == "?":
                regex, index = regex + "[^/]", index + 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex, index = regex + pattern[index : end + 1], end + 1
            else:
                regex, index = regex + re.escape(pattern[index]), index + 1
        patterns.append((negated, re.compile(f"{regex}$")))
    return patterns


def dockerignored(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or a folder above it decides."""
    path = PurePosixPath(relative)
    candidates = [str(path), *(str(parent) for parent in path.parents if str(parent) != ".")]
    excluded = False
    for negated, pattern in dockerignore_patterns():
        if any(pattern.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def copy_sources(image: Dockerfile) -> list[str]:
    sources = []
    for stage in image.stages:
        for instruction in stage:
            if instruction.keyword in ("COPY", "ADD"):
                words = instruction.arguments.split()
                if any(word.startswith("--from") for word in words):
                    continue
                sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


DOCKERFILES = ["router.Dockerfile", "runtime.Dockerfile"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_builds_from_files_in_the_context(name: str) -> None:
    image = dockerfile(name)
    assert all(stage[0].arguments.split()[0] == "python:3.11-slim" for stage in image.stages)
    sources = copy_sources(image)
    for source in sources:
        path = REPO / source
        assert path.exists(), f"{name} copies {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            built_here = "__pycache__" in relative or relative.endswith(".so")
            if not built_here:
                assert not dockerignored(relative), f"{relative} is left out by .dockerignore"
    # What pip needs to build mlfe: pyproject.toml, setup.py (the compiled scoring path),
    # its readme, every package it ships.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied = {source.strip("/") for source in sources}
    assert {"pyproject.toml", "setup.py", project["project"]["readme"]} <= copied
    shipped = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in shipped:
        packages = [p.name for p in REPO.glob(pattern) if (p / "__init__.py").exists()]
        assert packages and set(packages) <= copied, f"{pattern} is not copied into {name}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_the_image_runs_unprivileged_and_reports_its_health(name: str) -> None:
    image = dockerfile(name)
    assert image_user(name) != 0
    healthcheck = image.last("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    port = int(image.last("EXPOSE"))
    assert f"127.0.0.1:{port}/" in command[-1]


def test_secrets_and_local_state_stay_out_of_build_contexts() -> None:
    for path in (".venv/bin/python", ".git/config", ".mlfe/admin.key", "tests/conftest.py"):
        assert dockerignored(path), path
    assert dockerignored("router/__pycache__/app.cpython-311.pyc")
    assert dockerignored("router/dataplane.cpython-311-x86_64-linux-gnu.so")
    assert not dockerignored("router/app.py")


def test_the_router_image_serves_on_the_port_it_exposes() -> None:
    image = dockerfile("router.Dockerfile")
    argv = image.exec_form("ENTRYPOINT") + image.exec_form("CMD")
    assert argv[0] == "mlfe"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert args.host == "0.0.0.0"
    assert args.port == int(image.last("EXPOSE")) == 8080


def test_the_runtime_image_serves_on_the_port_the_backend_probes() -> None:
    image = dockerfile("runtime.Dockerfile")
    argv = image.exec_form("CMD")
    assert argv[:3] == ["python", "-m", "scoring_runtime"] == replica_container()["command"]
    config = parse_config(argv[3:], image.environment())
    assert config.host == "0.0.0.0"
    assert config.port == int(image.last("EXPOSE")) == kube_manifests.PORT
    assert str(config.source_dir) == kube_manifests.SOURCE_MOUNT


def test_replicas_listen_on_the_pod_address() -> None:
    container = replica_container()
    environment = {e["name"]: e["value"] for e in container["env"]}
    config = parse_config(container["args"], environment)
    assert config.host in ("0.0.0.0", "::")
    assert config.port == kube_manifests.PORT


def replica_container() -> Json:
    """The container mlfe's Kubernetes backend runs for a replica of the runtime image."""
    built = kube_manifests.build_manifests(
        DeploymentKey("svc", "v1"),
        ReplicaTemplate(entry_script="/app/score.py", source_dir="/app"),
        1,
        namespace=NAMESPACE,
        options=kube_manifests.PodOptions(source_in_image=True),
    )
    (container,) = built.deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


# -- the Grafana dashboard -------------------------------------------------------------------

# Labels Prometheus adds when scraping; replica pods' mlfe.io/service and mlfe.io/version
# labels become `service` and `version` through the scrape config in deploy/README.md.
TARGET_LABELS = {"instance", "job", "namespace", "pod"}
RELABELED = {"service", "version"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def dashboard() -> Json:
    loaded: Json = json.loads((DEPLOY / "grafana" / "mlfe-dashboard.json").read_text())
    return loaded


def exported_series() -> dict[str, set[str]]:
    """Every series name the router and the runtime export, with its labels, read from
    their real /metrics pages after one request of each kind."""
    router = RouterMetrics()
    version = router.version("svc", "v1")
    version.requests.count(200)
    version.latency.observe(0.01)
    version.queue_wait.observe(0.001)
    router.count_unrouted(404)
    router.watch_pools(lambda: [("svc", "v1", 1, 0, {"Ready": 1})])
    slots = ScoringSlots(1, 1.0)
    try:
        runtime = RuntimeMetrics(slots)
        runtime.observe(200, 0.01, 5.0)
        pages = {"router": router.render().decode(), "runtime": runtime.render().decode()}
    finally:
        slots.close()
    series: dict[str, set[str]] = {}
    for source, page in pages.items():
        for family in text_string_to_metric_families(page):
            for sample in family.samples:
                labels = set(sample.labels) | TARGET_LABELS
                if source == "runtime":
                    labels |= RELABELED
                series.setdefault(sample.name, set()).update(labels)
    return series


def dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["query"]["query"]))
    return found


_SERIES = re.compile(r"\b(mlfe_[a-z0-9_]+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def test_the_dashboard_queries_only_series_mlfe_exports() -> None:
    series = exported_series()
    queries = dashboard_queries()
    assert len(queries) >= 10
    used = set()
    for title, expr in queries:
        found = _SERIES.findall(expr)
        assert found, f"{title}: {expr} names no mlfe metric"
        labels_here: set[str] = set()
        for name, selector in found:
            assert name in series, f"{title}: {name} is not exported by router/ or scoring_runtime/"
            used.add(name)
            labels_here |= series[name]
            unknown = set(_MATCHER.findall(selector)) - series[name]
            assert not unknown, f"{title}: {name} has no label {sorted(unknown)}"
        for grouping in _GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            assert labels <= labels_here, f"{title}: groups by {sorted(labels - labels_here)}"
    # The panels the dashboard promises.
    for name in (
        "mlfe_requests_total",
        "mlfe_unrouted_requests_total",
        "mlfe_request_duration_seconds_bucket",
        "mlfe_queue_wait_seconds_bucket",
        "mlfe_in_flight_requests",
        "mlfe_waiting_requests",
        "mlfe_replicas",
    ):
        assert name in used, f"the dashboard has no panel on {name}"


def test_the_dashboard_variables_and_layout_hold_together() -> None:
    board = dashboard()
    defined = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "service", "version"} <= defined
    for title, expr in dashboard_queries():
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name in defined | BUILTIN_VARIABLES, f"{title}: ${name} is not defined"
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
