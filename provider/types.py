"""The OpenFaaS wire types (faas-provider ``types``), as plain records with one comment per field.

JSON keys, key order and ``omitempty`` follow faas-provider, so faas-cli, the gateway and our autoscaler
read our answers as they read faas-netes'. Fields we do not know are kept (``extra``) and sent back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from provider.errors import BadRequest

DEFAULT_NAMESPACE = "openfaas-fn"

_DEPLOYMENT_KEYS = ("service", "image", "namespace", "envProcess", "envVars", "constraints", "secrets",
                    "labels", "annotations", "limits", "requests", "readOnlyRootFilesystem")


@dataclass(frozen=True)
class FunctionDeployment:
    """The body of POST/PUT ``/system/functions``: the full spec of one function."""

    # Function name (a DNS label); also the name of its queue.
    service: str
    # Image reference; here it only selects the handler folder (see ``catalog``).
    image: str
    # Namespace; empty means the provider's default (faas-cli never sends it).
    namespace: str = ""
    # The template's fprocess; kept and reported, the watchdog runs handler.py.
    envProcess: str = ""
    # Environment of every replica (the watchdog's knobs included).
    envVars: Mapping[str, str] = field(default_factory=dict)
    # Placement constraints; kept and reported, one machine ignores them.
    constraints: tuple[str, ...] = ()
    # Secret names; a deploy naming any is refused (secrets are not supported by the local provider).
    secrets: tuple[str, ...] = ()
    # Labels (com.openfaas.scale.min/max, com.faas-infer.parent, ...).
    labels: Mapping[str, str] = field(default_factory=dict)
    # Annotations (com.faas-infer.latency_slo, ...).
    annotations: Mapping[str, str] = field(default_factory=dict)
    # Limits: memory (enforced), cpu (pins cores), nvidia.com/gpu (kept).
    limits: Mapping[str, str] = field(default_factory=dict)
    # Requests; kept and reported.
    requests: Mapping[str, str] = field(default_factory=dict)
    # Kept and reported; processes have no root filesystem of their own.
    readOnlyRootFilesystem: bool = False
    # Keys this version does not know, sent back unchanged.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: bytes) -> "FunctionDeployment":
        """Parse and validate a request body; ``BadRequest`` names what is wrong."""
        doc = _object(body)
        service, image = _str(doc, "service"), _str(doc, "image")
        if not service:
            raise BadRequest("service is required")
        if not image:
            raise BadRequest(f"image is required for service {service}")
        return cls(
            service=service, image=image, namespace=_str(doc, "namespace"), envProcess=_str(doc, "envProcess"),
            envVars=_strmap(doc, "envVars"), constraints=_strlist(doc, "constraints"),
            secrets=_strlist(doc, "secrets"), labels=_strmap(doc, "labels"),
            annotations=_strmap(doc, "annotations"), limits=_strmap(doc, "limits"),
            requests=_strmap(doc, "requests"), readOnlyRootFilesystem=_bool(doc, "readOnlyRootFilesystem"),
            extra={k: v for k, v in doc.items() if k not in _DEPLOYMENT_KEYS})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, empty fields left out."""
        out = {"service": self.service, "image": self.image}
        out.update(self._common())
        return out

    def _common(self) -> dict[str, Any]:
        pairs = [("namespace", self.namespace), ("envProcess", self.envProcess), ("envVars", dict(self.envVars)),
                 ("constraints", list(self.constraints)), ("secrets", list(self.secrets)),
                 ("labels", dict(self.labels)), ("annotations", dict(self.annotations)),
                 ("limits", _resources(self.limits)), ("requests", _resources(self.requests)),
                 ("readOnlyRootFilesystem", self.readOnlyRootFilesystem)]
        out = {k: v for k, v in pairs if v}
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


@dataclass(frozen=True)
class FunctionUsage:
    """Resource use of all replicas together (``?usage=1``)."""

    # CPU in millicores, averaged since the previous sample.
    cpu: float = 0.0
    # Resident memory of every replica process, in bytes.
    totalMemoryBytes: float = 0.0


@dataclass(frozen=True)
class FunctionStatus:
    """One element of GET ``/system/functions``: the deployment plus what runs."""

    # The deployed spec (namespace filled in).
    deployment: FunctionDeployment
    # Invocations seen by this provider, all status codes together.
    invocationCount: float = 0.0
    # Desired replicas.
    replicas: int = 0
    # Replicas that passed their health check and take requests.
    availableReplicas: int = 0
    # When the function was first deployed (UTC).
    createdAt: datetime | None = None
    # Resource use, when asked for.
    usage: FunctionUsage | None = None
    # faas-infer extension under key "faasInfer" (Go clients ignore it): queue, replicas, restarts, last exit.
    runtime: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, ordered and ``omitempty`` like faas-provider."""
        d = self.deployment
        out: dict[str, Any] = {"name": d.service, "image": d.image}
        out.update(d._common())
        for key, value in (("invocationCount", self.invocationCount), ("replicas", self.replicas),
                           ("availableReplicas", self.availableReplicas)):
            if value:
                out[key] = value
        if self.createdAt is not None:
            out["createdAt"] = go_time(self.createdAt)
        if self.usage is not None:
            out["usage"] = {"cpu": self.usage.cpu, "totalMemoryBytes": self.usage.totalMemoryBytes}
        if self.runtime:
            out["faasInfer"] = dict(self.runtime)
        return out


@dataclass(frozen=True)
class ScaleServiceRequest:
    """The body of POST ``/system/scale-function/{name}``."""

    # Function name (the path's name wins when they differ).
    serviceName: str
    # Desired replicas; 0 scales to zero.
    replicas: int
    # Namespace; empty means the default.
    namespace: str = ""

    @classmethod
    def from_json(cls, body: bytes) -> "ScaleServiceRequest":
        """Parse a request body; ``BadRequest`` names what is wrong."""
        doc = _object(body)
        replicas = doc.get("replicas", 0)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise BadRequest(f"replicas={replicas!r}: must be an integer >= 0")
        return cls(_str(doc, "serviceName"), replicas, _str(doc, "namespace"))


@dataclass(frozen=True)
class DeleteFunctionRequest:
    """The body of DELETE ``/system/functions``."""

    # Function to remove.
    functionName: str
    # Namespace; empty means the default.
    namespace: str = ""

    @classmethod
    def from_json(cls, body: bytes) -> "DeleteFunctionRequest":
        """Parse a request body; ``BadRequest`` names what is wrong."""
        doc = _object(body)
        name = doc.get("functionName")
        if not isinstance(name, str) or not name:
            raise BadRequest("functionName is required")
        return cls(name, _str(doc, "namespace"))


@dataclass(frozen=True)
class LogMessage:
    """One line of GET ``/system/logs`` (ndjson)."""

    # Function name.
    name: str
    # Namespace of the function.
    namespace: str
    # Replica (instance id) that wrote the line; "provider" for the provider's own events.
    instance: str
    # When the line was read (UTC).
    timestamp: datetime
    # The line, without its newline.
    text: str

    def to_json(self) -> str:
        """One ndjson line, newline included."""
        return json.dumps({"name": self.name, "namespace": self.namespace, "instance": self.instance,
                           "timestamp": go_time(self.timestamp), "text": self.text},
                          separators=(",", ":")) + "\n"


def provider_info(release: str, sha: str) -> dict[str, Any]:
    """faas-provider's ``ProviderInfo``, what a gateway in front of us reads."""
    return {"provider": "faas-infer", "orchestration": "processes", "version": {"sha": sha, "release": release}}


# platform.machine() names -> Go's GOARCH, which the gateway reports as its arch (runtime.GOARCH).
GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv5tel": "arm",
           "armv6l": "arm", "armv7l": "arm", "armv8l": "arm", "i386": "386", "i686": "386",
           "loongarch64": "loong64"}


def go_arch(machine: str) -> str:
    """``machine`` (``platform.machine()``) as Go names it (x86_64 -> amd64); others (ppc64le, s390x,
    riscv64) are spelt alike, in lower case."""
    return GO_ARCH.get(machine.lower(), machine.lower())


def gateway_info(release: str, sha: str, arch: str) -> dict[str, Any]:
    """The gateway's ``/system/info``, what faas-cli reads when it talks to us directly (``arch`` as
    ``platform.machine()`` names it; reported as Go's GOARCH)."""
    return {"provider": provider_info(release, sha),
            "version": {"commit_message": "", "sha": sha, "release": release}, "arch": go_arch(arch)}


def go_time(moment: datetime) -> str:
    """RFC 3339 with trailing zeros of the fraction dropped, as Go's ``time.Time`` marshals."""
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _resources(values: Mapping[str, str]) -> dict[str, str]:
    ordered = {k: values[k] for k in ("memory", "cpu") if values.get(k)}
    ordered.update({k: v for k, v in values.items() if k not in ordered and v})
    return ordered


def _object(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, got {_kind(value)}")
    return value


def _bool(doc: Mapping[str, Any], key: str) -> bool:
    value = doc.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, got {_kind(value)}")
    return value


def _strmap(doc: Mapping[str, Any], key: str) -> dict[str, str]:
    # As Go's decoder into map[string]string: null values become "", anything but a string is refused.
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{key} must be an object of strings, got {_kind(value)}")
    for k, v in value.items():
        if v is not None and not isinstance(v, str):
            raise BadRequest(f"{key}.{k} must be a string, got {_kind(v)}")
    return {k: v or "" for k, v in value.items()}


def _strlist(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest(f"{key} must be a list of strings, got {_kind(value)}")
    for i, v in enumerate(value):
        if v is not None and not isinstance(v, str):
            raise BadRequest(f"{key}[{i}] must be a string, got {_kind(v)}")
    return tuple(v or "" for v in value)


def _kind(value: Any) -> str:
    """How Go's decoder names a JSON value's type, with the value when short (``string "false"``)."""
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {json.dumps(value)}" if len(value) <= 40 else "a string"
    return "an object" if isinstance(value, dict) else "an array"
