"""Reading an OpenFaaS ``stack.yml``: ``${VAR}`` substitution, then plain frozen records per function."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Annotations faas-infer reads; OpenFaaS keeps and returns annotations untouched.
ANNOTATION_SLO = "com.faas-infer.latency_slo"
ANNOTATION_MODEL = "com.faas-infer.model"
LABEL_PARENT = "com.faas-infer.parent"
# OpenFaaS's instance bounds of a function.
LABEL_SCALE_MIN, LABEL_SCALE_MAX = "com.openfaas.scale.min", "com.openfaas.scale.max"


class _TextLoader(yaml.SafeLoader):
    """YAML read as faas-cli's Go decoder fills its string fields and ``map[string]string``s: a scalar is kept as
    it was written (``true``, ``0.10``, an image tag ``1.10``), and an empty value or ``~`` is the empty string,
    not ``None``/``"None"``. Anchors and merge keys work as with ``safe_load``."""


def _as_written(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


for _tag in ("bool", "int", "float", "timestamp"):
    _TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _as_written)
_TextLoader.add_constructor("tag:yaml.org,2002:null", lambda loader, node: "")
# What YAML 1.1 reads as true (a bool field of faas-cli's, written in any of these spellings).
_TRUE = frozenset(("true", "yes", "on"))


class StackError(ValueError):
    """The stack file is unreadable or breaks a rule; the message names the function and key."""


@dataclass(frozen=True)
class StackFunction:
    """One entry of ``functions:``."""

    name: str
    lang: str = ""
    handler: str = ""
    image: str = ""
    fprocess: str = ""
    namespace: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    requests: Mapping[str, str] = field(default_factory=dict)
    constraints: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    readonly_root_filesystem: bool = False
    # Absolute path of the handler folder (resolved against the stack file's folder).
    handler_path: str = ""


@dataclass(frozen=True)
class Stack:
    """A parsed stack file."""

    gateway: str
    functions: Mapping[str, StackFunction]
    path: str = ""


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` as faas-cli does."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(2) or ""), text)


def load_stack(path: str, env: Mapping[str, str] | None = None) -> Stack:
    """Parse ``path``; ``env`` feeds ``${VAR}`` substitution (the caller passes ``os.environ``)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(substitute(f.read(), env or {}), Loader=_TextLoader)  # noqa: S506 (a SafeLoader)
    except OSError as exc:
        raise StackError(f"cannot read stack file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise StackError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("functions"), dict):
        raise StackError(f"{path}: expected a mapping with 'functions:'")
    base = os.path.dirname(os.path.abspath(path))
    functions = {name: _function(name, spec or {}, base) for name, spec in doc["functions"].items()}
    gateway = str((doc.get("provider") or {}).get("gateway", "http://127.0.0.1:8080"))
    return Stack(gateway, functions, os.path.abspath(path))


def _function(name: str, spec: Any, base: str) -> StackFunction:
    if not isinstance(spec, dict):
        raise StackError(f"function {name}: expected a mapping")

    def strings(key: str) -> dict[str, str]:
        value = spec.get(key) or {}
        if not isinstance(value, dict):
            raise StackError(f"function {name}: {key} must be a mapping")
        return {str(k): str(v) for k, v in value.items()}

    handler = str(spec.get("handler", ""))
    return StackFunction(
        name=name, lang=str(spec.get("lang", "")), handler=handler, image=str(spec.get("image", "")),
        fprocess=str(spec.get("fprocess", "")), namespace=str(spec.get("namespace", "")),
        environment={**strings("environment"), **_environment_files(name, spec.get("environment_file"), base)},
        labels=strings("labels"), annotations=strings("annotations"),
        limits=strings("limits"), requests=strings("requests"),
        constraints=tuple(str(c) for c in spec.get("constraints") or ()),
        secrets=tuple(str(s) for s in spec.get("secrets") or ()),
        readonly_root_filesystem=str(spec.get("readonly_root_filesystem", "")).lower() in _TRUE,
        handler_path=os.path.normpath(os.path.join(base, handler)) if handler else "",
    )


def _environment_files(name: str, files: Any, base: str) -> dict[str, str]:
    """The ``environment:`` maps of a function's ``environment_file`` list, read as faas-cli reads them:
    paths relative to the stack file's folder, a later file overriding an earlier one; faas-cli lets them
    override the function's own ``environment`` too."""
    if files is None:
        return {}
    if not isinstance(files, list):
        raise StackError(f"function {name}: environment_file must be a list of file names")
    merged: dict[str, str] = {}
    for file in files:
        path = os.path.join(base, str(file))
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.load(f, Loader=_TextLoader) or {}  # noqa: S506 (a SafeLoader)
        except OSError as exc:
            raise StackError(f"function {name}: cannot read environment_file {file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise StackError(f"function {name}: environment_file {file}: not valid YAML: {exc}") from None
        environment = doc.get("environment") if isinstance(doc, dict) else None
        if not isinstance(environment, dict):
            raise StackError(f"function {name}: environment_file {file}: expected a mapping with 'environment:'")
        merged.update({str(k): str(v) for k, v in environment.items()})
    return merged
