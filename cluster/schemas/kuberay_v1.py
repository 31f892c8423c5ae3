"""The ray.io/v1 RayService, RayJob and RayCluster spec schemas, written as JSON Schema.

Transcribed field by field from KubeRay's API types (ray-project/kuberay,
ray-operator/apis/ray/v1/{rayservice,rayjob,raycluster}_types.go, 2026 master; every field
of KubeRay 1.x that our manifests use has been there since v1.0). Core Kubernetes types are
`$ref`s into the Kubernetes OpenAPI definitions that build.py adds. Unknown fields are
rejected, as `kubectl apply` with strict field validation does; the CRD's CEL rules that
are plain enumerations are written as `enum`.
"""

from __future__ import annotations

K8S = "#/$defs/io.k8s."


def ref(name: str) -> dict:
    return {"$ref": f"{K8S}{name}"}


def obj(properties: dict, required: tuple[str, ...] = ()) -> dict:
    out: dict = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def array(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, **extra}


INT = {"type": "integer"}
NONNEG_INT = {"type": "integer", "minimum": 0}
NUMBER = {"type": "number"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = ref("apimachinery.pkg.apis.meta.v1.ObjectMeta")
POD_TEMPLATE = ref("api.core.v1.PodTemplateSpec")
SERVICE = ref("api.core.v1.Service")
QUANTITY = ref("apimachinery.pkg.api.resource.Quantity")
MANAGED_BY = {"type": "string", "enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]}


def enum(*values: str) -> dict:
    return {"type": "string", "enum": list(values)}


REDIS_CREDENTIAL = obj({"valueFrom": ref("api.core.v1.EnvVarSource"), "value": STR})

NETWORK_POLICY_RULES = {
    "ingressRules": array(ref("api.networking.v1.NetworkPolicyIngressRule")),
    "egressRules": array(ref("api.networking.v1.NetworkPolicyEgressRule")),
}

DEFS: dict[str, dict] = {
    "AutoscalerOptions": obj(
        {
            "resources": ref("api.core.v1.ResourceRequirements"),
            "image": STR,
            "imagePullPolicy": STR,
            "securityContext": ref("api.core.v1.SecurityContext"),
            "idleTimeoutSeconds": INT,
            "upscalingMode": enum("Default", "Aggressive", "Conservative"),
            "version": enum("v1", "v2"),
            "env": array(ref("api.core.v1.EnvVar")),
            "envFrom": array(ref("api.core.v1.EnvFromSource")),
            "volumeMounts": array(ref("api.core.v1.VolumeMount")),
            "command": array(STR),
            "args": array(STR),
        }
    ),
    "GcsFaultToleranceOptions": obj(
        {
            "backend": enum("redis", "rocksdb"),
            "redisUsername": REDIS_CREDENTIAL,
            "redisPassword": REDIS_CREDENTIAL,
            "externalStorageNamespace": STR,
            "redisAddress": STR,
            "storage": obj(
                {
                    "claimName": STR,
                    "size": QUANTITY,
                    "storageClassName": STR,
                    "accessModes": array(STR),
                    "subPath": STR,
                    "deletionPolicy": enum("DeleteWithCluster", "Retain"),
                }
            ),
        }
    ),
    "HistoryServerOptions": obj(
        {
            "collectorOptions": obj(
                {
                    "image": STR,
                    "imagePullPolicy": STR,
                    "resources": ref("api.core.v1.ResourceRequirements"),
                    "env": array(ref("api.core.v1.EnvVar")),
                }
            )
        }
    ),
    "NetworkPolicyConfig": obj(
        {
            "mode": enum("DenyAll", "DenyAllIngress", "DenyAllEgress"),
            "head": obj(NETWORK_POLICY_RULES),
            "worker": obj(NETWORK_POLICY_RULES),
            "workerGroups": array(
                obj({"groupName": STR, **NETWORK_POLICY_RULES}, required=("groupName",))
            ),
        }
    ),
    "HeadGroupSpec": obj(
        {
            "template": POD_TEMPLATE,
            "headService": SERVICE,
            "enableIngress": BOOL,
            "ingressOptions": obj(
                {
                    "host": STR,
                    "path": STR,
                    "pathType": enum("Exact", "Prefix", "ImplementationSpecific"),
                    "tls": array(ref("api.networking.v1.IngressTLS")),
                }
            ),
            "resources": STR_MAP,
            "labels": STR_MAP,
            "rayStartParams": STR_MAP,
            "serviceType": STR,
        },
        required=("template",),
    ),
    "WorkerGroupSpec": obj(
        {
            "suspend": BOOL,
            "groupName": STR,
            "replicas": INT,
            "minReplicas": INT,
            "maxReplicas": INT,
            "idleTimeoutSeconds": INT,
            "priority": INT,
            "resources": STR_MAP,
            "labels": STR_MAP,
            "rayStartParams": STR_MAP,
            "template": POD_TEMPLATE,
            "scaleStrategy": obj({"workersToDelete": array(STR)}),
            "numOfHosts": INT,
        },
        required=("groupName", "template"),
    ),
    "RayClusterSpec": obj(
        {
            "upgradeStrategy": obj({"type": enum("Recreate", "None")}),
            "authOptions": obj(
                {"enableK8sTokenAuth": BOOL, "secretName": STR, "mode": enum("disabled", "token")}
            ),
            "suspend": BOOL,
            "managedBy": MANAGED_BY,
            "autoscalerOptions": {"$ref": "#/$defs/AutoscalerOptions"},
            "headServiceAnnotations": STR_MAP,
            "enableInTreeAutoscaling": BOOL,
            "gcsFaultToleranceOptions": {"$ref": "#/$defs/GcsFaultToleranceOptions"},
            "historyServerOptions": {"$ref": "#/$defs/HistoryServerOptions"},
            "networkPolicy": {"$ref": "#/$defs/NetworkPolicyConfig"},
            "tlsOptions": obj({"enabled": BOOL}),
            "headGroupSpec": {"$ref": "#/$defs/HeadGroupSpec"},
            "rayVersion": STR,
            "workerGroupSpecs": array({"$ref": "#/$defs/WorkerGroupSpec"}),
        },
        required=("headGroupSpec",),
    ),
    "RayServiceSpec": obj(
        {
            "rayClusterDeletionDelaySeconds": NONNEG_INT,
            "serviceUnhealthySecondThreshold": INT,
            "deploymentUnhealthySecondThreshold": INT,
            "serveService": SERVICE,
            "upgradeStrategy": obj(
                {
                    "type": STR,
                    "clusterUpgradeOptions": obj(
                        {
                            "maxSurgePercent": INT,
                            "stepSizePercent": INT,
                            "intervalSeconds": INT,
                            "gatewayClassName": STR,
                        },
                        required=("stepSizePercent", "intervalSeconds", "gatewayClassName"),
                    ),
                }
            ),
            "serveConfigV2": STR,
            "rayClusterConfig": {"$ref": "#/$defs/RayClusterSpec"},
            "excludeHeadPodFromServeSvc": BOOL,
        },
        required=("rayClusterConfig",),
    ),
    "RayJobSpec": obj(
        {
            "activeDeadlineSeconds": INT,
            "backoffLimit": INT,
            "rayClusterSpec": {"$ref": "#/$defs/RayClusterSpec"},
            "submitterPodTemplate": POD_TEMPLATE,
            "metadata": STR_MAP,
            "clusterSelector": STR_MAP,
            "submitterConfig": obj({"backoffLimit": INT}),
            "managedBy": MANAGED_BY,
            "deletionStrategy": obj(
                {
                    "onSuccess": obj({"policy": {"$ref": "#/$defs/DeletionPolicyType"}}),
                    "onFailure": obj({"policy": {"$ref": "#/$defs/DeletionPolicyType"}}),
                    "deletionRules": array(
                        obj(
                            {
                                "policy": {"$ref": "#/$defs/DeletionPolicyType"},
                                "condition": obj(
                                    {
                                        "jobStatus": enum("SUCCEEDED", "FAILED"),
                                        "jobDeploymentStatus": enum("Failed"),
                                        "ttlSeconds": NONNEG_INT,
                                    }
                                ),
                            },
                            required=("policy", "condition"),
                        ),
                        minItems=1,
                    ),
                }
            ),
            "entrypoint": STR,
            "runtimeEnvYAML": STR,
            "jobId": STR,
            "submissionMode": STR,
            "entrypointResources": STR,
            "entrypointNumCpus": NUMBER,
            "entrypointNumGpus": NUMBER,
            "ttlSecondsAfterFinished": INT,
            "shutdownAfterJobFinishes": BOOL,
            "suspend": BOOL,
        }
    ),
    "DeletionPolicyType": enum("DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"),
}


def _resource(kind: str, spec: str) -> dict:
    # `status` is written by the operator; a manifest may carry any.
    return obj(
        {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": OBJECT_META,
            "spec": {"$ref": f"#/$defs/{spec}"},
            "status": {"type": "object"},
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    )


DEFS["RayService"] = _resource("RayService", "RayServiceSpec")
DEFS["RayJob"] = _resource("RayJob", "RayJobSpec")

# Core Kubernetes definitions the KubeRay schema reaches, plus the Secret we ship.
K8S_ROOTS = (
    "io.k8s.api.core.v1.PodTemplateSpec",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.Secret",
    "io.k8s.api.core.v1.ResourceRequirements",
    "io.k8s.api.core.v1.SecurityContext",
    "io.k8s.api.core.v1.EnvVar",
    "io.k8s.api.core.v1.EnvFromSource",
    "io.k8s.api.core.v1.EnvVarSource",
    "io.k8s.api.core.v1.VolumeMount",
    "io.k8s.api.networking.v1.NetworkPolicyIngressRule",
    "io.k8s.api.networking.v1.NetworkPolicyEgressRule",
    "io.k8s.api.networking.v1.IngressTLS",
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
)
