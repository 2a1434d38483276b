"""Tests over the rendered Kubernetes manifests of deploy/ (run by `make deploy-check`).

    test_manifests.py --deploy deploy --repo . .out/dev.yaml .out/production.yaml ...

Each rendered file is named after its kustomization (dev, production, operators). The facts
the manifests must agree with are read from the sources, not repeated here: configuration
keys and defaults from crates/hookline-config/src/lib.rs, the egress guard's refused ranges
from crates/hookline-egress/src/class.rs, the image's binaries from deploy/Dockerfile.
Prints one line per failure and closes with `deploy: N passed, M failed`.
"""

import argparse
import base64
import ipaddress
import json
import os
import re
import sys

import yaml

# The five services: binary -> (listen key, workload kind).
SERVICES = {
    "hookline-subscription-api": ("api_listen", "Deployment"),
    "hookline-extract-producer": ("extracts_listen", "Deployment"),
    "hookline-dead-letter": ("dead_letters_listen", "Deployment"),
    "hookline-router": ("router_listen", "StatefulSet"),
    "hookline-delivery-worker": ("worker_listen", "Deployment"),
}
IMAGE_BINARIES = {"hookline", *SERVICES}

# The Ingress: one host, these public paths to these services.
INGRESS_ROUTES = {
    "/api/v1/event-deliveries/secrets": "hookline-subscription-api",
    "/api/v1/event-deliveries/subscriptions": "hookline-subscription-api",
    "/v2/webhooks": "hookline-subscription-api",
    "/admin/v1/event-types": "hookline-subscription-api",
    "/api/v1/app": "hookline-subscription-api",
    "/api/v1/event-type": "hookline-subscription-api",
    "/api/v1/health": "hookline-subscription-api",
    "/api/v1/openapi.json": "hookline-subscription-api",
    "/api/v1/event-deliveries/deliveries": "hookline-dead-letter",
    "/api/v1/event-deliveries/attempts": "hookline-dead-letter",
    "/api/v1/event-deliveries/dead-letters": "hookline-dead-letter",
    "/api/v1/event-deliveries/replays": "hookline-dead-letter",
    "/admin/v1/quarantine": "hookline-dead-letter",
    "/api/v1/extracts": "hookline-extract-producer",
}

# Cluster-internal and special ranges the workers' internet egress must leave out.
WORKER_EXCEPT_V4 = [
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "169.254.0.0/16", "127.0.0.0/8",
]
WORKER_EXCEPT_V6 = ["fc00::/7", "fe80::/10"]

SECRET_NAME = "hookline-secrets"
WORKLOADS = ("Deployment", "StatefulSet", "Job")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# Not a field of Config, but read by Config::load: the TOML file to load.
SPECIAL_KEYS = {"HOOKLINE_CONFIG"}


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed.append(f"{name}{': ' + detail if detail else ''}")
        return ok


# ---------------------------------------------------------------------------- sources


def config_fields(lib_rs):
    """The `pub` fields of `pub struct Config` and their types."""
    body = re.search(r"pub struct Config \{(.*?)\n\}", lib_rs, re.S)
    if not body:
        raise SystemExit("deploy: cannot find `pub struct Config` in hookline-config")
    return dict(re.findall(r"^\s*pub (\w+):\s*([^,\n]+),", body.group(1), re.M))


def config_defaults(lib_rs):
    """Default values from `impl Default for Config`, as the strings an env var would hold."""
    body = re.search(r"impl Default for Config \{.*?Self \{(.*?)\n        \}", lib_rs, re.S)
    if not body:
        raise SystemExit("deploy: cannot find `impl Default for Config` in hookline-config")
    out = {}
    for key, expr in re.findall(r"^\s*(\w+): (.+?),\s*$", body.group(1), re.M):
        if m := re.fullmatch(r'"([^"]*)"\.into\(\)', expr):
            out[key] = m.group(1)
        elif m := re.fullmatch(r"addr\((\d+)\)", expr):
            out[key] = f"127.0.0.1:{m.group(1)}"
        elif expr == "String::new()":
            out[key] = ""
        elif re.fullmatch(r"[\d_ *.]+", expr):
            out[key] = str(eval(expr.replace("_", "")))  # digits, `_`, `*` and `.` only
        elif expr in ("true", "false"):
            out[key] = expr
    return out


def config_topics(lib_rs):
    """`fn topics`: every topic's Config field and whether it is compacted."""
    body = re.search(r"pub fn topics\(&self\).*?vec!\[(.*?)\]", lib_rs, re.S)
    if not body:
        raise SystemExit("deploy: cannot find `fn topics` in hookline-config")
    return dict((f, c == "true") for f, c in re.findall(r"\(&self\.(\w+), (true|false)\)", body.group(1)))


def guard_ranges(class_rs):
    """Every block the egress guard refuses outright (V4_BLOCKS, V6_BLOCKS)."""
    nets = []
    for a, b, c, d, n in re.findall(r"v4\((\d+), (\d+), (\d+), (\d+), (\d+)\)", class_rs):
        nets.append(ipaddress.ip_network(f"{a}.{b}.{c}.{d}/{n}"))
    for groups, n in re.findall(r"v6\(\s*\[([^\]]*)\],\s*(\d+)\s*\)", class_rs):
        parts = [int(g.strip(), 0) for g in groups.split(",")]
        addr = ipaddress.IPv6Address(sum(p << (16 * (7 - i)) for i, p in enumerate(parts)))
        nets.append(ipaddress.ip_network(f"{addr}/{n}", strict=False))
    return nets


def dockerfile_facts(text):
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    resolve = lambda image: re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image)
    return {
        "stages": [(resolve(image), stage) for image, stage in froms],
        "users": re.findall(r"^USER\s+(\S+)", text, re.M),
        "copied": set(re.findall(r"target/release/([\w-]+)", text)),
        "text": text,
    }


# ---------------------------------------------------------------------------- helpers


def load(path):
    with open(path) as f:
        return [o for o in yaml.safe_load_all(f) if o]


def meta(obj, key):
    return obj.get("metadata", {}).get(key)


def strip_hash(name):
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def pod_labels(obj):
    return obj["spec"]["template"]["metadata"].get("labels", {})


def containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def duration_seconds(text):
    total, rest = 0.0, text.strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", rest):
        total += float(num) * units[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?(ms|s|m|h)\s*)+", rest):
        raise ValueError(f"cannot read duration {text!r}")
    return total


# ---------------------------------------------------------------------------- the tests


class Render:
    """One rendered kustomization and the configuration its pods see."""

    def __init__(self, name, objects, fields, defaults):
        self.name = name
        self.objects = objects
        self.fields = fields
        self.defaults = defaults

    def of(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind, name):
        for o in self.objects:
            if o["kind"] == kind and meta(o, "name") == name:
                return o
        return None

    def configmap(self, name):
        for o in self.of("ConfigMap"):
            if meta(o, "name") == name or strip_hash(meta(o, "name")) == name:
                return o
        return None

    def env_of(self, spec, container):
        """The configuration a container's process sees: defaults, envFrom, then env."""
        env = {f"HOOKLINE_{k.upper()}": v for k, v in self.defaults.items()}
        for source in container.get("envFrom", []):
            if ref := source.get("configMapRef"):
                cm = self.configmap(ref["name"])
                env.update((cm or {}).get("data", {}))
        for e in container.get("env", []):
            env[e["name"]] = e.get("value", e.get("valueFrom"))
        return env

    def workloads(self):
        return [o for o in self.objects if o["kind"] in WORKLOADS]

    def service_workload(self, binary):
        for w in self.workloads():
            for c in pod_spec(w)["containers"]:
                if c.get("command", [None])[0] == binary:
                    return w, c
        return None, None


def test_render(r: Render, t: Results, dockerfile, guard):
    n = r.name
    production = n in ("production", "operators")

    # Every namespaced object lands in the overlay's namespace.
    namespaces = {meta(o, "name") for o in r.of("Namespace")}
    t.check(f"{n}: one Namespace", len(namespaces) == 1, str(namespaces))
    for ns in r.of("Namespace"):
        labels = meta(ns, "labels") or {}
        t.check(f"{n}: Namespace enforces the restricted pod security standard",
                labels.get("pod-security.kubernetes.io/enforce") == "restricted")
    for o in r.objects:
        if o["kind"] not in CLUSTER_SCOPED:
            t.check(f"{n}: {o['kind']}/{meta(o, 'name')} is in the overlay's namespace",
                    meta(o, "namespace") in namespaces, str(meta(o, "namespace")))

    # Configuration keys: every HOOKLINE_ variable is a field of Config.
    hookline_keys = set()
    for cm in r.of("ConfigMap"):
        for key in cm.get("data", {}):
            if strip_hash(meta(cm, "name")) == "hookline-config":
                t.check(f"{n}: ConfigMap key {key} has the HOOKLINE_ prefix",
                        key.startswith("HOOKLINE_"))
            if key.startswith("HOOKLINE_"):
                hookline_keys.add(key)
    for w in r.workloads():
        for c in containers(pod_spec(w)):
            for e in c.get("env", []):
                if e["name"].startswith("HOOKLINE_"):
                    hookline_keys.add(e["name"])
    for key in sorted(hookline_keys):
        field = key[len("HOOKLINE_"):].lower()
        t.check(f"{n}: {key} is a configuration key (field `{field}` of Config)",
                field in r.fields or key in SPECIAL_KEYS)

    cm = r.configmap("hookline-config")
    t.check(f"{n}: ConfigMap hookline-config exists", cm is not None)
    config = {**{f"HOOKLINE_{k.upper()}": v for k, v in r.defaults.items()}, **(cm or {}).get("data", {})}
    t.check(f"{n}: the router instance is not shared through the ConfigMap",
            "HOOKLINE_ROUTER_INSTANCE" not in (cm or {}).get("data", {}))
    t.check(f"{n}: log_format is json or pretty", config["HOOKLINE_LOG_FORMAT"] in ("json", "pretty"))
    if production:
        t.check(f"{n}: log_format is json", config["HOOKLINE_LOG_FORMAT"] == "json")
        t.check(f"{n}: egress_allow is empty", not config.get("HOOKLINE_EGRESS_ALLOW", "").strip(),
                config.get("HOOKLINE_EGRESS_ALLOW", ""))
        t.check(f"{n}: topics are replicated (topic_replication >= 3)",
                int(config["HOOKLINE_TOPIC_REPLICATION"]) >= 3)
    t.check(f"{n}: services do not create topics", config["HOOKLINE_CREATE_TOPICS"] == "false")
    partitions = int(config["HOOKLINE_TOPIC_PARTITIONS"])
    t.check(f"{n}: topic_partitions >= 1", partitions >= 1)
    if "HOOKLINE_TOPIC_MIN_INSYNC_REPLICAS" in config:
        t.check(f"{n}: topic_min_insync_replicas within 1..topic_replication",
                1 <= int(config["HOOKLINE_TOPIC_MIN_INSYNC_REPLICAS"]) <= int(config["HOOKLINE_TOPIC_REPLICATION"]))
    grace = duration_seconds(config["HOOKLINE_SHUTDOWN_GRACE"])

    # Images: one image, the Dockerfile's binaries, a pinned tag.
    for w in r.workloads():
        spec = pod_spec(w)
        wn = f"{w['kind']}/{meta(w, 'name')}"
        t.check(f"{n}: {wn} mounts no service account token",
                spec.get("automountServiceAccountToken") is False)
        psc = spec.get("securityContext", {})
        is_job = w["kind"] == "Job"
        for c in containers(spec):
            cn = f"{wn} container {c['name']}"
            image = c.get("image", "")
            t.check(f"{n}: {cn} image has a pinned tag or digest",
                    "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")), image)
            if production:
                t.check(f"{n}: {cn} image names a registry", "/" in image, image)
            command = c.get("command", [])
            t.check(f"{n}: {cn} runs a binary of the image",
                    bool(command) and command[0] in IMAGE_BINARIES and command[0] in dockerfile["copied"], str(command))

            res = c.get("resources", {})
            t.check(f"{n}: {cn} requests CPU and memory",
                    {"cpu", "memory"} <= set(res.get("requests", {})), str(res))
            t.check(f"{n}: {cn} has a memory limit", "memory" in res.get("limits", {}), str(res))

            sc = c.get("securityContext", {})
            eff = lambda key: sc.get(key, psc.get(key))
            t.check(f"{n}: {cn} runs as non-root", eff("runAsNonRoot") is True and eff("runAsUser") != 0)
            t.check(f"{n}: {cn} has a read-only root filesystem", sc.get("readOnlyRootFilesystem") is True)
            t.check(f"{n}: {cn} cannot escalate privileges", sc.get("allowPrivilegeEscalation") is False)
            t.check(f"{n}: {cn} is not privileged", not sc.get("privileged"))
            t.check(f"{n}: {cn} drops all capabilities",
                    sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add"))
            t.check(f"{n}: {cn} uses the RuntimeDefault seccomp profile",
                    (eff("seccompProfile") or {}).get("type") == "RuntimeDefault")

            if is_job:
                continue  # runs to completion, serves nothing: no probes
            env = r.env_of(spec, c)
            binary = command[0] if command else ""
            listen_key = SERVICES.get(binary, (None,))[0]
            listen = env.get(f"HOOKLINE_{(listen_key or '').upper()}", "")
            t.check(f"{n}: {cn} listens on all interfaces",
                    bool(re.fullmatch(r"0\.0\.0\.0:\d+", str(listen))), str(listen))
            port = int(str(listen).rsplit(":", 1)[-1]) if ":" in str(listen) else None
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            t.check(f"{n}: {cn} declares its listen port", port in ports.values(), f"{port} vs {ports}")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = c.get(probe, {}).get("httpGet", {})
                probe_port = ports.get(get.get("port"), get.get("port"))
                t.check(f"{n}: {cn} {probe} is GET {path} on the listen port",
                        get.get("path") == path and probe_port == port, str(get))
            pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            t.check(f"{n}: {wn} terminationGracePeriodSeconds exceeds preStop + shutdown_grace",
                    spec.get("terminationGracePeriodSeconds", 30) > pre_stop + grace,
                    f"{spec.get('terminationGracePeriodSeconds', 30)} <= {pre_stop} + {grace}")
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    t.check(f"{n}: {cn} reads its secret from {SECRET_NAME}",
                            strip_hash(ref["name"]) == SECRET_NAME, ref["name"])
        for v in spec.get("volumes", []):
            if "secret" in v:
                # hookline-secrets, or a Kafka user's Secret and the cluster CA
                # (components/kafka-scram).
                name = strip_hash(v["secret"]["secretName"])
                t.check(f"{n}: {wn} mounts its secret from {SECRET_NAME} or its Kafka user's",
                        name == SECRET_NAME or name in kafka_secret_names(), name)

    # The five services, each in its kind of workload.
    for binary, (_, kind) in SERVICES.items():
        w, c = r.service_workload(binary)
        t.check(f"{n}: {binary} runs as a {kind}", w is not None and w["kind"] == kind,
                w and w["kind"] or "missing")

    # Router: stable, distinct instance names from the StatefulSet's pod names.
    router, rc = r.service_workload("hookline-router")
    if router:
        env = {e["name"]: e for e in rc.get("env", [])}
        field = ((env.get("HOOKLINE_ROUTER_INSTANCE") or {}).get("valueFrom") or {}).get("fieldRef", {})
        t.check(f"{n}: HOOKLINE_ROUTER_INSTANCE is the pod name (downward API)",
                field.get("fieldPath") == "metadata.name", str(field))
        t.check(f"{n}: router replicas <= events partitions",
                router["spec"].get("replicas", 1) <= partitions)
        svc = r.get("Service", router["spec"].get("serviceName"))
        t.check(f"{n}: the router's governing Service is headless",
                svc is not None and svc["spec"].get("clusterIP") == "None")

    # Worker: one autoscaler, bounded by the deliveries partitions.
    worker, _ = r.service_workload("hookline-delivery-worker")
    if worker:
        wname = meta(worker, "name")
        hpas = [h for h in r.of("HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"].get("name") == wname]
        scaled = [s for s in r.of("ScaledObject") if s["spec"]["scaleTargetRef"].get("name") == wname]
        t.check(f"{n}: the worker has exactly one autoscaler", len(hpas) + len(scaled) == 1,
                f"{len(hpas)} HPA, {len(scaled)} ScaledObject")
        t.check(f"{n}: the worker Deployment leaves replicas to its autoscaler",
                "replicas" not in worker["spec"])
        for h in hpas:
            t.check(f"{n}: the worker HPA scales on CPU",
                    any(m.get("resource", {}).get("name") == "cpu" for m in h["spec"]["metrics"]))
            t.check(f"{n}: worker maxReplicas <= deliveries partitions",
                    h["spec"]["maxReplicas"] <= partitions, f"{h['spec']['maxReplicas']} > {partitions}")
        for s in scaled:
            trig = s["spec"]["triggers"][0]
            md = trig["metadata"]
            t.check(f"{n}: KEDA scales on the Kafka lag", trig["type"] == "kafka")
            t.check(f"{n}: KEDA watches the deliveries topic",
                    md.get("topic") == config["HOOKLINE_TOPIC_DELIVERIES"], md.get("topic"))
            t.check(f"{n}: KEDA watches the workers' consumer group",
                    md.get("consumerGroup") == f"{config['HOOKLINE_GROUP_PREFIX']}.delivery-worker", md.get("consumerGroup"))
            t.check(f"{n}: KEDA reaches the same Kafka",
                    md.get("bootstrapServers") == config["HOOKLINE_KAFKA_BOOTSTRAP"], md.get("bootstrapServers"))
            t.check(f"{n}: KEDA maxReplicaCount <= deliveries partitions",
                    s["spec"]["maxReplicaCount"] <= partitions)

    # Disruption budgets and Services match the pods they are for.
    pdbs = r.of("PodDisruptionBudget")
    for w in r.workloads():
        if w["kind"] == "Job":
            continue
        labels = pod_labels(w)
        t.check(f"{n}: {w['kind']}/{meta(w, 'name')} has a PodDisruptionBudget",
                any(selects(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs))
    for p in pdbs:
        t.check(f"{n}: PDB {meta(p, 'name')} allows one disruption at any replica count",
                p["spec"].get("maxUnavailable") == 1)
    for svc in r.of("Service"):
        targets = [w for w in r.workloads() if selects(svc["spec"].get("selector", {}), pod_labels(w))]
        t.check(f"{n}: Service {meta(svc, 'name')} selects one workload", len(targets) == 1)
        for port in svc["spec"]["ports"]:
            names = {cp.get("name") for w in targets for c in pod_spec(w)["containers"] for cp in c.get("ports", [])}
            t.check(f"{n}: Service {meta(svc, 'name')} targets a declared port",
                    port.get("targetPort") in names, str(port.get("targetPort")))

    # Ingress: every public route, one host.
    ingresses = r.of("Ingress")
    t.check(f"{n}: one Ingress", len(ingresses) == 1)
    for ing in ingresses:
        rules = ing["spec"]["rules"]
        t.check(f"{n}: the Ingress serves one host", len({x.get("host") for x in rules}) == 1)
        routes = {}
        for rule in rules:
            for p in rule["http"]["paths"]:
                routes[p["path"]] = p["backend"]["service"]
        for path, service in INGRESS_ROUTES.items():
            got = routes.get(path, {})
            t.check(f"{n}: Ingress routes {path} to {service}", got.get("name") == service, str(got))
        for path, backend in routes.items():
            svc = r.get("Service", backend["name"])
            t.check(f"{n}: Ingress backend of {path} is a Service port",
                    svc is not None and backend["port"].get("name") in {p.get("name") for p in svc["spec"]["ports"]})
        if production:
            t.check(f"{n}: the Ingress terminates TLS", bool(ing["spec"].get("tls")))

    # Network policy: deny by default; DNS and Kafka for all; the internet for workers only.
    policies = r.of("NetworkPolicy")
    hook_pods = [pod_labels(w) for w in r.workloads()]
    deny = [p for p in policies if not p["spec"].get("ingress") and not p["spec"].get("egress")
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}]
    t.check(f"{n}: a default-deny policy covers every pod",
            all(any(selects(p["spec"]["podSelector"].get("matchLabels", {}), lab) for p in deny) for lab in hook_pods))
    kafka_ports = {int(hp.rsplit(":", 1)[1]) for hp in config["HOOKLINE_KAFKA_BOOTSTRAP"].split(",")}

    def egress_rules(labels):
        return [rule for p in policies if "Egress" in p["spec"].get("policyTypes", [])
                and selects(p["spec"]["podSelector"].get("matchLabels", {}), labels)
                for rule in p["spec"].get("egress", [])]

    for w in r.workloads():
        labels, wn = pod_labels(w), meta(w, "name")
        rules = egress_rules(labels)
        dns = [x for x in rules if any(
            (peer.get("podSelector") or {}).get("matchLabels", {}).get("k8s-app") == "kube-dns"
            for peer in x.get("to", []))]
        t.check(f"{n}: {wn} may resolve names (kube-dns, UDP and TCP 53)",
                any({(p["protocol"], p["port"]) for p in x.get("ports", [])} >= {("UDP", 53), ("TCP", 53)} for x in dns))
        t.check(f"{n}: {wn} may reach Kafka on its port",
                all(any(not x.get("to") and any(p.get("port") == kp for p in x.get("ports", [])) for x in rules)
                    for kp in kafka_ports), str(kafka_ports))
        t.check(f"{n}: {wn} may send OTLP over HTTP (4318) to a collector",
                any(any(p.get("port") == 4318 and p.get("protocol") == "TCP" for p in x.get("ports", []))
                    for x in rules))
        blocks = [peer["ipBlock"] for x in rules for peer in x.get("to", []) if "ipBlock" in peer]
        open_ports = [x for x in rules if not x.get("to") and not x.get("ports")]
        t.check(f"{n}: {wn} has no unrestricted egress rule", not open_ports)
        is_worker = w is worker
        if not is_worker:
            t.check(f"{n}: {wn} gets no internet egress", not blocks, str(blocks))
            continue
        v4 = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
        v6 = [b for b in blocks if b["cidr"] == "::/0"]
        t.check(f"{n}: the workers reach the IPv4 internet", len(v4) == 1)
        t.check(f"{n}: the workers reach the IPv6 internet", len(v6) == 1)
        t.check(f"{n}: the workers' IPv4 egress leaves out the internal ranges",
                bool(v4) and set(WORKER_EXCEPT_V4) <= set(v4[0].get("except", [])),
                str(v4 and v4[0].get("except")))
        t.check(f"{n}: the workers' IPv6 egress leaves out the internal ranges",
                bool(v6) and set(WORKER_EXCEPT_V6) <= set(v6[0].get("except", [])),
                str(v6 and v6[0].get("except")))
        for b in blocks:
            for cidr in b.get("except", []):
                net = ipaddress.ip_network(cidr)
                t.check(f"{n}: worker egress exception {cidr} is a range the egress guard refuses",
                        any(net.version == g.version and net.subnet_of(g) for g in guard))
        other = [c for c in blocks if c["cidr"] not in ("0.0.0.0/0", "::/0")]
        t.check(f"{n}: the workers' only address blocks are the two internet blocks", not other, str(other))

    # The subscription API's Svix face asks the operations API: its URL names the
    # dead-letter Service, and a policy lets the API's pods reach the dead-letter pods' port.
    by_name = {meta(w, "name"): w for w in r.workloads()}
    api, ops = by_name.get("hookline-subscription-api"), by_name.get("hookline-dead-letter")
    if api is not None and ops is not None:
        env = {e["name"]: e.get("value") for c in containers(pod_spec(api)) for e in c.get("env", [])}
        t.check(f"{n}: the subscription API's operations_url is the dead-letter Service",
                env.get("HOOKLINE_OPERATIONS_URL") == "http://hookline-dead-letter",
                str(env.get("HOOKLINE_OPERATIONS_URL")))
        ops_ports = {p["containerPort"] for c in containers(pod_spec(ops)) for p in c.get("ports", [])}
        t.check(f"{n}: the subscription API may reach the operations API's pods",
                any(any(selects((peer.get("podSelector") or {}).get("matchLabels", {}), pod_labels(ops))
                        for peer in x.get("to", []))
                    and {p.get("port") for p in x.get("ports", [])} & ops_ports
                    for x in egress_rules(pod_labels(api))), str(ops_ports))

    # The Grafana dashboard, generated from deploy/grafana/hookline.json.
    dashboards = [c for c in r.of("ConfigMap") if (meta(c, "labels") or {}).get("grafana_dashboard") == "1"]
    t.check(f"{n}: one dashboard ConfigMap labelled grafana_dashboard: \"1\"", len(dashboards) == 1)
    for d in dashboards:
        data = d.get("data", {}).get("hookline.json")
        t.check(f"{n}: the dashboard ConfigMap holds deploy/grafana/hookline.json",
                data == dashboard_text, "contents differ")
        try:
            t.check(f"{n}: the dashboard is Grafana JSON", "panels" in json.loads(data or ""))
        except ValueError as e:
            t.check(f"{n}: the dashboard is Grafana JSON", False, str(e))

    # Secrets: a fake generated one in dev; in production only the operator's.
    secrets = r.of("Secret")
    if production:
        t.check(f"{n}: renders no Secret (the operator creates {SECRET_NAME})", not secrets,
                str([meta(s, "name") for s in secrets]))
    else:
        ours = [s for s in secrets if strip_hash(meta(s, "name")) == SECRET_NAME]
        t.check(f"{n}: has the example Secret {SECRET_NAME}", len(ours) == 1)
        for s in ours:
            data = {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
            t.check(f"{n}: the example Secret has master-key and tokens", set(data) == {"master-key", "tokens"})
            try:
                key = base64.b64decode(data.get("master-key", ""), validate=True)
            except ValueError:
                key = b""
            t.check(f"{n}: the example master key is base64 of 32 bytes", len(key) == 32)
            t.check(f"{n}: the example master key is obviously fake", b"fake" in key)
            entries = [e.strip() for e in re.split(r"[;\n]", data.get("tokens", "")) if e.strip() and not e.startswith("#")]
            t.check(f"{n}: the example Secret has tokens", bool(entries))
            for e in entries:
                m = re.fullmatch(r"([^=]{16,})=([^:/]+):(viewer|editor|admin)", e)
                t.check(f"{n}: token entry {e.split('=')[0]} is `token=tenant:role`", bool(m))
                t.check(f"{n}: token {e.split('=')[0]} is obviously fake", "fake" in e.split("=")[0])

    # The topic Job runs `hookline topics` with the shared configuration.
    jobs = r.of("Job")
    t.check(f"{n}: one topic-creation Job", len(jobs) == 1)
    for j in jobs:
        c = pod_spec(j)["containers"][0]
        t.check(f"{n}: the Job runs `hookline topics`", c.get("command") == ["hookline", "topics"], str(c.get("command")))
        t.check(f"{n}: the Job reads hookline-config",
                any(strip_hash(s.get("configMapRef", {}).get("name", "")) == "hookline-config" for s in c.get("envFrom", [])))
        t.check(f"{n}: the Job does not restart forever", pod_spec(j).get("restartPolicy") in ("OnFailure", "Never")
                and j["spec"].get("backoffLimit", 6) <= 10)

    # Optional Prometheus Operator ServiceMonitor (examples/operators).
    for sm in r.of("ServiceMonitor"):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        matched = [s for s in r.of("Service") if selects(sel, meta(s, "labels") or {})]
        t.check(f"{n}: the ServiceMonitor selects every Service", len(matched) == len(r.of("Service")),
                f"{len(matched)} of {len(r.of('Service'))}")
        for ep in sm["spec"]["endpoints"]:
            t.check(f"{n}: the ServiceMonitor scrapes /metrics on a named Service port",
                    ep.get("path") == "/metrics" and all(ep.get("port") in {p.get("name") for p in s["spec"]["ports"]} for s in matched))


def test_kafka_topics(label, docs, topics, defaults, t: Results):
    """Strimzi KafkaTopic examples: one per topic, with the right cleanup policy."""
    kafka_topics = [d for d in docs if d.get("kind") == "KafkaTopic"]
    by_name = {d["metadata"]["name"]: d for d in kafka_topics}
    t.check(f"{label}: one KafkaTopic per topic", len(by_name) == len(kafka_topics) == len(topics),
            f"{len(kafka_topics)} KafkaTopics for {len(topics)} topics")
    for field, compacted in topics.items():
        name = defaults.get(field)
        kt = by_name.get(name)
        t.check(f"{label}: KafkaTopic for {field} ({name})", kt is not None)
        if not kt:
            continue
        spec = kt.get("spec", {})
        policy = spec.get("config", {}).get("cleanup.policy")
        # A compacted topic may also expire old records (the Svix messages topic does).
        wanted = ("compact", "compact,delete") if compacted else ("delete",)
        t.check(f"{label}: {name} cleanup.policy is {'compact' if compacted else 'delete'}",
                policy in wanted, str(policy))
        t.check(f"{label}: {name} has partitions and replicas",
                isinstance(spec.get("partitions"), int) and isinstance(spec.get("replicas"), int))
        t.check(f"{label}: {name} min.insync.replicas below replicas",
                1 <= int(spec.get("config", {}).get("min.insync.replicas", 1)) < spec.get("replicas", 1))
        t.check(f"{label}: {name} names its Strimzi cluster",
                "strimzi.io/cluster" in kt["metadata"].get("labels", {}))


KAFKA_USERS_FILE = []


def kafka_secret_names():
    """The Secrets components/kafka-scram mounts: each KafkaUser's, and the cluster CA."""
    with open(KAFKA_USERS_FILE[0]) as f:
        users = list(yaml.safe_load_all(f))
    return {u["metadata"]["name"] for u in users if u} | {"my-cluster-cluster-ca-cert"}


def test_kafka_users(label, docs, defaults, acl_file, renders, t: Results):
    """Strimzi KafkaUser resources (generated by `hookline acls` from the one ACL table):
    well-formed, SCRAM-SHA-512 with simple authorization, every ACL naming a known topic or
    the group prefix, and the same ACLs as deploy/kafka/acls.txt (the local broker's)."""
    users = [d for d in docs if d]
    t.check(f"{label}: only KafkaUsers", all(d.get("kind") == "KafkaUser" and
            d.get("apiVersion") == "kafka.strimzi.io/v1beta2" for d in users))
    topic_names = {v for k, v in defaults.items() if k.startswith("topic_") and isinstance(v, str)}
    prefix = defaults.get("group_prefix", "hookline") + "."
    from_yaml = set()
    for u in users:
        name = u.get("metadata", {}).get("name", "?")
        spec = u.get("spec", {})
        t.check(f"{label}: {name} authenticates with scram-sha-512",
                spec.get("authentication", {}).get("type") == "scram-sha-512")
        t.check(f"{label}: {name} names its Strimzi cluster",
                "strimzi.io/cluster" in u["metadata"].get("labels", {}))
        authz = spec.get("authorization", {})
        t.check(f"{label}: {name} has simple authorization with ACLs",
                authz.get("type") == "simple" and len(authz.get("acls", [])) > 0)
        for acl in authz.get("acls", []):
            res = acl.get("resource", {})
            kind, rname, pattern = res.get("type"), res.get("name"), res.get("patternType")
            ok = (kind == "topic" and rname in topic_names and pattern == "literal") or \
                 (kind in ("group", "transactionalId") and str(rname).startswith(prefix))
            t.check(f"{label}: {name} {kind} {rname} is a Hookline topic, group or transactional id", ok)
            t.check(f"{label}: {name} {kind} {rname} operations are Read/Write/Create",
                    set(acl.get("operations", [])) <= {"Read", "Write", "Create"} and acl.get("operations"))
            kafka_kind = {"topic": "TOPIC", "group": "GROUP", "transactionalId": "TRANSACTIONAL_ID"}.get(kind)
            for op in acl.get("operations", []):
                from_yaml.add((f"User:{name}", kafka_kind, pattern.upper().replace("PREFIX", "PREFIXED"), rname, op.upper()))
    from_file = {tuple(line.split()) for line in acl_file.splitlines() if line.strip() and not line.startswith("#")}
    t.check(f"{label}: the same ACLs as kafka/acls.txt", from_yaml == from_file,
            f"{len(from_yaml ^ from_file)} differ")
    # Every workload of the production overlay mounts the Secret of a KafkaUser.
    user_names = {u["metadata"]["name"] for u in users}
    prod = renders.get("production")
    if prod is not None:
        for obj in prod.objects:
            if obj.get("kind") not in ("Deployment", "StatefulSet", "Job"):
                continue
            vols = obj["spec"]["template"]["spec"].get("volumes", [])
            secrets = {v.get("secret", {}).get("secretName") for v in vols}
            t.check(f"production: {obj['metadata']['name']} mounts the Secret of its KafkaUser",
                    bool(secrets & user_names), str(sorted(s for s in secrets if s)))


def test_dockerfile(d, t: Results, dockerignore):
    stages = d["stages"]
    t.check("Dockerfile: multi-stage", len(stages) >= 2, str(stages))
    if not stages:
        return
    t.check("Dockerfile: builds on rust:1-bookworm", stages[0][0] == "rust:1-bookworm", stages[0][0])
    t.check("Dockerfile: runs on debian:bookworm-slim or distroless cc",
            stages[-1][0] == "debian:bookworm-slim" or stages[-1][0].startswith("gcr.io/distroless/cc"), stages[-1][0])
    t.check("Dockerfile: the image runs as uid 65532", d["users"][-1:] in (["65532"], ["65532:65532"]), str(d["users"]))
    t.check("Dockerfile: the image holds `hookline` and the five service binaries",
            d["copied"] >= IMAGE_BINARIES, str(IMAGE_BINARIES - d["copied"]))
    t.check("Dockerfile: installs librdkafka's build tools",
            all(p in d["text"] for p in ("build-essential", "cmake", "perl")))
    t.check("Dockerfile: builds with the lock file", "--locked" in d["text"])
    ignored = {l.strip() for l in dockerignore.splitlines() if l.strip() and not l.startswith("#")}
    t.check("Dockerfile.dockerignore: leaves out target/ and .git", {"target", ".git"} <= ignored)


def main():
    global dashboard_text
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploy", required=True, help="the deploy/ folder")
    parser.add_argument("--repo", required=True, help="the repository root")
    parser.add_argument("--step", action="append", default=[], metavar="NAME=STATUS",
                        help="the exit status of an earlier step (hadolint, schemas), counted as a test")
    parser.add_argument("rendered", nargs="+", help="rendered YAML, one file per kustomization")
    args = parser.parse_args()

    read = lambda *p: open(os.path.join(*p)).read()
    KAFKA_USERS_FILE.append(os.path.join(args.deploy, "strimzi/kafka-users.yaml"))
    lib_rs = read(args.repo, "crates/hookline-config/src/lib.rs")
    fields, defaults = config_fields(lib_rs), config_defaults(lib_rs)
    guard = guard_ranges(read(args.repo, "crates/hookline-egress/src/class.rs"))
    dockerfile = dockerfile_facts(read(args.deploy, "Dockerfile"))
    dashboard_text = read(args.deploy, "grafana/hookline.json")

    t = Results()
    for step in args.step:
        name, _, status = step.partition("=")
        t.check(f"{name} succeeded", status == "0", f"exit status {status}")
    t.check("sources: Config has fields", len(fields) > 20, str(len(fields)))
    t.check("sources: the egress guard has ranges", len(guard) > 20, str(len(guard)))
    renders = {}
    for path in args.rendered:
        name = os.path.splitext(os.path.basename(path))[0]
        renders[name] = Render(name, load(path), fields, defaults)
    t.check("renders: dev and production", {"dev", "production"} <= set(renders), str(sorted(renders)))
    for r in renders.values():
        test_render(r, t, dockerfile, guard)
    test_dockerfile(dockerfile, t, read(args.deploy, "Dockerfile.dockerignore"))
    topics = config_topics(lib_rs)
    t.check("sources: fn topics lists topics", len(topics) >= 10, str(len(topics)))
    test_kafka_topics("strimzi/kafka-topics.yaml",
                      list(yaml.safe_load_all(read(args.deploy, "strimzi/kafka-topics.yaml"))), topics, defaults, t)
    test_kafka_users("strimzi/kafka-users.yaml",
                     list(yaml.safe_load_all(read(args.deploy, "strimzi/kafka-users.yaml"))), defaults,
                     read(args.deploy, "kafka/acls.txt"), renders, t)
    readme = read(args.deploy, "README.md")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "kind: KafkaTopic" in b]
    test_kafka_topics("README.md", [d for b in blocks for d in yaml.safe_load_all(b) if d], topics, defaults, t)

    for f in t.failed:
        print(f"FAIL {f}")
    print(f"deploy: {t.passed} passed, {len(t.failed)} failed")
    return 1 if t.failed else 0


dashboard_text = ""

if __name__ == "__main__":
    sys.exit(main())
