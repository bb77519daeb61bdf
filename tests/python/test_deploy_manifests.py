"""The deployment files agree with Kubernetes' schemas and with each other.

deploy/k8s validates (strictly: no unknown field) against Kubernetes' own
schemas, as bundled by kubernetes-validate; its kustomization lists every
file; and the StatefulSet, rendered as Kubernetes would render it, gives the
container the same environment, arguments, configuration and DNS names as
deploy/compose/docker-compose.yml gives each of its services. Needs neither
docker nor a cluster."""
import base64
import copy
import json
import posixpath
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
LABEL = "app.kubernetes.io/name"

# The oldest Kubernetes we claim (every API used here is GA there) and the
# newest the pinned kubernetes-validate bundles.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def load_one(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: one resource per file, found {len(docs)}"
    return docs[0]


def manifest_files():
    return sorted(p for p in K8S.iterdir() if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml")


def resources():
    """Every resource of deploy/k8s by kind (one of each kind here)."""
    by_kind = {}
    for path in manifest_files():
        doc = load_one(path)
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def one(kind, name=None):
    docs = [d for d in resources()[kind] if name is None or d["metadata"]["name"] == name]
    assert len(docs) == 1, f"expected one {kind} {name or ''}, found {len(docs)}"
    return docs[0]


def kustomization():
    return load_one(K8S / "kustomization.yaml")


def namespace():
    return kustomization()["namespace"]


def secret_values():
    """The Secret's values as the pod sees them: stringData over data."""
    secret = one("Secret", "warren")
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    values.update(secret.get("stringData") or {})
    return values


def statefulset():
    return one("StatefulSet", "warren")


def container():
    containers = statefulset()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# --- Kubernetes' rendering of a container's environment ----------------------

K8S_REF = re.compile(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))")


def k8s_expand(value: str, defined: dict) -> str:
    """$(VAR) becomes VAR's value if VAR was defined earlier in the list,
    else stays as is; $$ is a literal $ (Kubernetes' dependent variables)."""

    def sub(m):
        if m.group(1) == "$":
            return "$"
        return defined.get(m.group(2), m.group(0))

    return K8S_REF.sub(sub, value)


def k8s_env(c: dict, ns: str, secret_name: str, secrets: dict) -> dict:
    env = {}
    for var in c["env"]:
        name = var["name"]
        assert name not in env, f"{name} declared twice"
        if "value" in var:
            env[name] = k8s_expand(var["value"], env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.namespace", source
            env[name] = ns
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] == secret_name, ref
            assert ref["key"] in secrets, f"{name}: the Secret has no key {ref['key']}"
            env[name] = secrets[ref["key"]]
        else:
            raise AssertionError(f"{name}: unexpected source {source}")
    return env


# --- Compose's interpolation -----------------------------------------------

COMPOSE_REF = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def compose_interpolate(value, given: dict):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?msg},
    ${VAR?msg}, $VAR and $$, with `given` as the shell's environment."""
    if isinstance(value, dict):
        return {k: compose_interpolate(v, given) for k, v in value.items()}
    if isinstance(value, list):
        return [compose_interpolate(v, given) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4)
        got = given.get(name)
        if op is None:
            assert got is not None, f"${name} is not set"
            return got
        if op == ":-":
            return got if got else arg
        if op == "-":
            return got if got is not None else arg
        if op == ":?" and not got or op == "?" and got is None:
            raise LookupError(f"{name}: {arg}")
        return got

    return COMPOSE_REF.sub(sub, value)


def compose_given():
    """What the test exports before `docker-compose up`: the Secret's values,
    so that both deployments get the same ones."""
    s = secret_values()
    return {"WARREN_CLUSTER_SECRET": s["cluster-secret"], "WARREN_DEFAULT_PASS": s["default-pass"]}


def compose():
    # safe_load resolves the anchors and the `<<` merge keys.
    raw = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return compose_interpolate(raw, compose_given())


def compose_services():
    services = compose()["services"]
    assert services
    return services


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def named_port(c: dict, name: str) -> int:
    ports = [p for p in c["ports"] if p["name"] == name]
    assert len(ports) == 1, f"container port {name}"
    return ports[0]["containerPort"]


def dockerfile_json(instruction: str):
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith(instruction + " ")]
    assert len(lines) == 1, instruction
    return json.loads(lines[0][len(instruction) + 1 :])


# --- a) schemas ---------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_validates_strictly(path, version):
    doc = load_one(path)
    validated = kubernetes_validate.validate(doc, version, strict=True)
    assert validated == kubernetes_validate.utils.major_minor(version)


def broken_statefulsets():
    """The real StatefulSet with one mistake each."""
    base = statefulset()

    def top(d):
        d["spec"]["replica"] = 3

    def nested(d):
        d["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"httpGet": {"path": "/ready"}}

    def wrong_type(d):
        d["spec"]["replicas"] = "three"

    def missing(d):
        del d["spec"]["selector"]

    for mistake in (top, nested, wrong_type, missing):
        d = copy.deepcopy(base)
        mistake(d)
        yield pytest.param(d, id=mistake.__name__)


@pytest.mark.parametrize("doc", broken_statefulsets())
def test_validator_rejects_broken_statefulset(doc):
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


# --- b) kustomization ---------------------------------------------------------


def test_kustomization_lists_every_file():
    k = kustomization()
    listed = k["resources"]
    assert len(listed) == len(set(listed)), "a resource listed twice"
    assert sorted(listed) == [p.name for p in manifest_files()]


def test_kustomization_namespace_and_image():
    k = kustomization()
    assert k["namespace"] == "warren"
    assert one("Namespace")["metadata"]["name"] == k["namespace"]
    # The namespace comes from the kustomization alone.
    for docs in resources().values():
        for doc in docs:
            assert "namespace" not in doc["metadata"], doc["metadata"]["name"]
    image = container()["image"]
    name, tag = image.rsplit(":", 1)
    assert k["images"] == [{"name": name, "newTag": tag}]


# --- c) Kubernetes and compose agree -----------------------------------------


def test_compose_requires_the_secrets():
    raw = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    for missing in compose_given():
        given = {k: v for k, v in compose_given().items() if k != missing}
        with pytest.raises(LookupError, match=missing):
            compose_interpolate(raw, given)


def test_environment_and_args_match_compose():
    ns = namespace()
    c = container()
    env = k8s_env(c, ns, "warren", secret_values())
    names = [v["name"] for v in c["env"]]
    assert names.index("POD_NAMESPACE") < names.index("WARREN_PEERS_FROM_DNS")
    assert env.pop("POD_NAMESPACE") == ns
    assert not any("$(" in v for v in env.values()), env
    # The namespace is the pod's, not written in: another namespace works too.
    elsewhere = k8s_env(c, "elsewhere", "warren", secret_values())
    assert elsewhere["WARREN_PEERS_FROM_DNS"] == env["WARREN_PEERS_FROM_DNS"].replace(f".{ns}.", ".elsewhere.")
    for name, service in compose_services().items():
        assert service["environment"] == env, name
        assert service["command"] == c["args"], name
        assert service["image"] == c["image"], name
    assert c["args"] == dockerfile_json("CMD")


def test_secret_values_are_usable():
    s = secret_values()
    assert set(s) == {"cluster-secret", "default-user", "default-pass"}
    assert len(s["cluster-secret"].encode()) >= 16
    assert s["default-user"] != "guest"  # guest is loopback-only


def test_dns_names_match_compose_and_headless_service():
    ns = namespace()
    sts = statefulset()
    c = container()
    env = k8s_env(c, ns, "warren", secret_values())
    size = int(env["WARREN_CLUSTER_SIZE"])
    assert sts["spec"]["replicas"] == size
    host_pattern, port = env["WARREN_PEERS_FROM_DNS"].rsplit(":", 1)
    peers = [host_pattern.replace("{i}", str(i)) for i in range(size)]

    # In Kubernetes: <pod>.<serviceName>.<namespace>.svc.cluster.local.
    name = sts["metadata"]["name"]
    service_name = sts["spec"]["serviceName"]
    assert peers == [f"{name}-{i}.{service_name}.{ns}.svc.cluster.local" for i in range(size)]
    headless = one("Service", service_name)["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    cluster_port = int(port)
    assert cluster_port == port_of(env["WARREN_CLUSTER_LISTEN"]) == named_port(c, "cluster")
    assert {"port": cluster_port, "targetPort": "cluster"}.items() <= next(
        p for p in headless["ports"] if p["name"] == "cluster"
    ).items()

    # In compose: host name warren-i, network alias the same DNS name.
    services = compose_services()
    by_host = {s["hostname"]: s for s in services.values()}
    assert sorted(by_host) == [f"{name}-{i}" for i in range(size)]
    for i in range(size):
        networks = by_host[f"{name}-{i}"]["networks"]
        aliases = [a for net in networks.values() for a in (net or {}).get("aliases", [])]
        assert aliases == [peers[i]]


def test_configmap_is_the_compose_config():
    data = one("ConfigMap", "warren-config")["data"]
    assert data == {"warren.toml": (COMPOSE / "warren.toml").read_text()}


def test_probes_use_the_http_port():
    c = container()
    env = k8s_env(c, namespace(), "warren", secret_values())
    assert named_port(c, "http") == port_of(env["WARREN_HTTP_LISTEN"])
    assert named_port(c, "amqp") == port_of(env["WARREN_AMQP_LISTEN"])
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "startupProbe" not in c
    assert c["lifecycle"]["preStop"]["exec"]["command"] == [dockerfile_json("ENTRYPOINT")[0], "drain"]
    for service in compose_services().values():
        targets = sorted(int(p.rsplit(":", 1)[1]) for p in service["ports"])
        assert targets == sorted([named_port(c, "amqp"), named_port(c, "http")])


def test_mounts_match_config_and_data_dir():
    sts = statefulset()
    c = container()
    env = k8s_env(c, namespace(), "warren", secret_values())
    config_dir, config_file = posixpath.split(env["WARREN_CONFIG"])
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}

    config = mounts[config_dir]
    assert config.get("readOnly") is True
    config_map = volumes[config["name"]]["configMap"]["name"]
    assert config_file in one("ConfigMap", config_map)["data"]

    data = mounts[env["WARREN_DATA_DIR"]]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert data["name"] == claim["metadata"]["name"] == "data"
    assert data["name"] not in volumes
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]

    # compose: the named volume warren-N-data and ./warren.toml, read-only.
    for service in compose_services().values():
        vols = dict(v.split(":", 1) for v in service["volumes"])
        assert vols[f"{service['hostname']}-data"] == env["WARREN_DATA_DIR"]
        assert vols["./warren.toml"] == env["WARREN_CONFIG"] + ":ro"


def test_security_context_matches_the_image():
    pod = statefulset()["spec"]["template"]["spec"]["securityContext"]
    text = DOCKERFILE.read_text()
    uid = int(re.search(r"--uid (\d+)", text).group(1))
    gid = int(re.search(r"--gid (\d+)", text).group(1))
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (uid, gid, gid)
    assert pod["runAsNonRoot"] is True
    sc = container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_labels_and_selectors_agree():
    sts = statefulset()
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for docs in resources().values():
        for doc in docs:
            assert doc["metadata"]["labels"][LABEL] == "warren", doc["metadata"]["name"]
    port_names = {p["name"] for p in container()["ports"]}
    for svc in resources()["Service"]:
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names
            assert named_port(container(), p["targetPort"]) == p["port"]
    client = one("Service", "warren")["spec"]
    assert {p["name"] for p in client["ports"]} == {"amqp", "http"}
    pdb = one("PodDisruptionBudget", "warren")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
