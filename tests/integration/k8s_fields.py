"""Field names of the Kubernetes (and KEDA, Prometheus-operator) objects in deploy/kubernetes/,
from their OpenAPI schemas (Kubernetes 1.29 core/apps/policy/rbac, KEDA 2.13, monitoring.coreos.com
v1), reduced to the parts these manifests may use. check(obj) returns a list of problems:
an unknown field (a typo such as `readinesProbe` would be silently ignored by a lenient
apply), a wrong apiVersion for the kind, or a value of the wrong shape. kubeconform and
kubeval are not packaged for Debian 12, hence this table."""

STR, INT, BOOL = "string", "integer", "boolean"
ANY_MAP = "map"  # string -> string (labels, annotations, data)


def L(x):  # a list of x
    return ("list", x)


META = {"name": STR, "namespace": STR, "labels": ANY_MAP, "annotations": ANY_MAP}
LABEL_SELECTOR = {"matchLabels": ANY_MAP, "matchExpressions": L({"key": STR, "operator": STR, "values": L(STR)})}
INT_OR_STR = "int-or-string"
HTTP_GET = {"path": STR, "port": INT_OR_STR, "host": STR, "scheme": STR,
            "httpHeaders": L({"name": STR, "value": STR})}
EXEC = {"command": L(STR)}
PROBE = {"httpGet": HTTP_GET, "exec": EXEC, "tcpSocket": {"port": INT_OR_STR, "host": STR},
         "initialDelaySeconds": INT, "periodSeconds": INT, "timeoutSeconds": INT,
         "failureThreshold": INT, "successThreshold": INT, "terminationGracePeriodSeconds": INT}
HANDLER = {"exec": EXEC, "httpGet": HTTP_GET, "sleep": {"seconds": INT}}
RESOURCES = {"requests": ANY_MAP, "limits": ANY_MAP}
CAPS = {"add": L(STR), "drop": L(STR)}
SECCOMP = {"type": STR, "localhostProfile": STR}
CONTAINER_SC = {"allowPrivilegeEscalation": BOOL, "readOnlyRootFilesystem": BOOL, "capabilities": CAPS,
                "runAsNonRoot": BOOL, "runAsUser": INT, "runAsGroup": INT, "privileged": BOOL,
                "seccompProfile": SECCOMP}
ENV_FROM = {"configMapRef": {"name": STR, "optional": BOOL}, "secretRef": {"name": STR, "optional": BOOL},
            "prefix": STR}
KEY_REF = {"name": STR, "key": STR, "optional": BOOL}
ENV = {"name": STR, "value": STR, "valueFrom": {"secretKeyRef": KEY_REF, "configMapKeyRef": KEY_REF,
                                               "fieldRef": {"fieldPath": STR, "apiVersion": STR}}}
CONTAINER = {"name": STR, "image": STR, "imagePullPolicy": STR, "command": L(STR), "args": L(STR),
             "env": L(ENV), "envFrom": L(ENV_FROM), "workingDir": STR,
             "ports": L({"name": STR, "containerPort": INT, "protocol": STR, "hostPort": INT}),
             "livenessProbe": PROBE, "readinessProbe": PROBE, "startupProbe": PROBE,
             "lifecycle": {"preStop": HANDLER, "postStart": HANDLER},
             "resources": RESOURCES, "securityContext": CONTAINER_SC,
             "volumeMounts": L({"name": STR, "mountPath": STR, "readOnly": BOOL, "subPath": STR})}
VOLUME = {"name": STR, "emptyDir": {"medium": STR, "sizeLimit": STR},
          "secret": {"secretName": STR, "defaultMode": INT, "optional": BOOL},
          "configMap": {"name": STR, "defaultMode": INT, "optional": BOOL}}
POD_SC = {"runAsNonRoot": BOOL, "runAsUser": INT, "runAsGroup": INT, "fsGroup": INT, "seccompProfile": SECCOMP}
POD_SPEC = {"serviceAccountName": STR, "automountServiceAccountToken": BOOL,
            "terminationGracePeriodSeconds": INT, "securityContext": POD_SC, "containers": L(CONTAINER),
            "initContainers": L(CONTAINER), "volumes": L(VOLUME), "nodeSelector": ANY_MAP,
            "tolerations": L({"key": STR, "operator": STR, "value": STR, "effect": STR}),
            "priorityClassName": STR,
            "topologySpreadConstraints": L({"maxSkew": INT, "topologyKey": STR, "whenUnsatisfiable": STR,
                                            "labelSelector": LABEL_SELECTOR})}

KINDS = {
    "ServiceAccount": ("v1", {"metadata": META, "automountServiceAccountToken": BOOL,
                              "imagePullSecrets": L({"name": STR})}),
    "ConfigMap": ("v1", {"metadata": META, "data": ANY_MAP, "immutable": BOOL}),
    "Secret": ("v1", {"metadata": META, "type": STR, "stringData": ANY_MAP, "data": ANY_MAP, "immutable": BOOL}),
    "Service": ("v1", {"metadata": META, "spec": {
        "selector": ANY_MAP, "type": STR, "clusterIP": STR,
        "ports": L({"name": STR, "port": INT, "targetPort": INT_OR_STR, "protocol": STR})}}),
    "Role": ("rbac.authorization.k8s.io/v1", {"metadata": META, "rules": L({
        "apiGroups": L(STR), "resources": L(STR), "verbs": L(STR), "resourceNames": L(STR)})}),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", {"metadata": META,
                                                     "roleRef": {"apiGroup": STR, "kind": STR, "name": STR},
                                                     "subjects": L({"kind": STR, "name": STR, "namespace": STR,
                                                                    "apiGroup": STR})}),
    "Deployment": ("apps/v1", {"metadata": META, "spec": {
        "replicas": INT, "revisionHistoryLimit": INT, "selector": LABEL_SELECTOR,
        "minReadySeconds": INT, "progressDeadlineSeconds": INT,
        "strategy": {"type": STR, "rollingUpdate": {"maxSurge": INT_OR_STR, "maxUnavailable": INT_OR_STR}},
        "template": {"metadata": META, "spec": POD_SPEC}}}),
    "PodDisruptionBudget": ("policy/v1", {"metadata": META, "spec": {
        "maxUnavailable": INT_OR_STR, "minAvailable": INT_OR_STR, "selector": LABEL_SELECTOR,
        "unhealthyPodEvictionPolicy": STR}}),
    "ScaledObject": ("keda.sh/v1alpha1", {"metadata": META, "spec": {
        "scaleTargetRef": {"name": STR, "kind": STR, "apiVersion": STR, "envSourceContainerName": STR},
        "minReplicaCount": INT, "maxReplicaCount": INT, "pollingInterval": INT, "cooldownPeriod": INT,
        "idleReplicaCount": INT,
        "triggers": L({"type": STR, "name": STR, "metadata": ANY_MAP,
                       "authenticationRef": {"name": STR, "kind": STR}})}}),
    "TriggerAuthentication": ("keda.sh/v1alpha1", {"metadata": META, "spec": {
        "secretTargetRef": L({"parameter": STR, "name": STR, "key": STR}),
        "env": L({"parameter": STR, "name": STR, "containerName": STR})}}),
    "ServiceMonitor": ("monitoring.coreos.com/v1", {"metadata": META, "spec": {
        "selector": LABEL_SELECTOR, "namespaceSelector": {"matchNames": L(STR), "any": BOOL},
        "endpoints": L({"port": STR, "path": STR, "interval": STR, "scrapeTimeout": STR, "scheme": STR,
                        "bearerTokenSecret": KEY_REF})}}),
}
# KEDA redis-streams trigger metadata (XLEN mode: streamLength, no consumerGroup)
REDIS_STREAMS_META = {"address", "addressFromEnv", "host", "port", "stream", "streamLength",
                      "activationLagCount", "enableTLS", "databaseIndex", "usernameFromEnv", "passwordFromEnv"}


def _check(v, schema, path, errs):
    if schema == STR:
        if not isinstance(v, str):
            errs.append(f"{path}: expected a string, got {v!r}")
    elif schema == INT:
        if not isinstance(v, int) or isinstance(v, bool):
            errs.append(f"{path}: expected an integer, got {v!r}")
    elif schema == BOOL:
        if not isinstance(v, bool):
            errs.append(f"{path}: expected true/false, got {v!r}")
    elif schema == INT_OR_STR:
        if not isinstance(v, (int, str)) or isinstance(v, bool):
            errs.append(f"{path}: expected an integer or a string, got {v!r}")
    elif schema == ANY_MAP:
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
            errs.append(f"{path}: expected a map of strings, got {v!r}")
    elif isinstance(schema, tuple):
        if not isinstance(v, list):
            errs.append(f"{path}: expected a list")
            return
        for i, x in enumerate(v):
            _check(x, schema[1], f"{path}[{i}]", errs)
    elif isinstance(schema, dict):
        if not isinstance(v, dict):
            errs.append(f"{path}: expected an object")
            return
        for k, x in v.items():
            if k not in schema:
                errs.append(f"{path}.{k}: unknown field")
            else:
                _check(x, schema[k], f"{path}.{k}", errs)


def check(obj):
    errs = []
    kind = obj.get("kind")
    if kind not in KINDS:
        return [f"unknown kind {kind!r}"]
    api, schema = KINDS[kind]
    if obj.get("apiVersion") != api:
        errs.append(f"apiVersion {obj.get('apiVersion')!r}, expected {api!r} for {kind}")
    if not obj.get("metadata", {}).get("name"):
        errs.append("metadata.name missing")
    rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    _check(rest, schema, kind, errs)
    if kind == "ScaledObject":
        for i, t in enumerate(obj["spec"].get("triggers", [])):
            for k in t.get("metadata", {}):
                if t.get("type") == "redis-streams" and k not in REDIS_STREAMS_META:
                    errs.append(f"triggers[{i}].metadata.{k}: not a redis-streams field")
    if kind == "Deployment":
        sel = obj["spec"]["selector"].get("matchLabels", {})
        labels = obj["spec"]["template"]["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in sel.items()):
            errs.append("spec.selector does not match the template's labels")
    return errs
