"""Renders the chart in both modes for the oldest and the newest Kubernetes
version it claims (Chart.yaml's kubeVersion) and validates every document
against the schemas an API server would use, offline:

- built-in kinds against Kubernetes' OpenAPI schemas for that version, from
  the kubernetes-validate package, strict (an unknown field is an error, as
  with `kubectl apply --validate=strict`);
- ServiceMonitor and PrometheusRule against prometheus-operator's CRD schemas,
  as the cloudcoil-models-prometheus-operator package generates them, also
  strict: a field the model would drop is reported as unknown.

Before that, it makes sure each validator rejects a document with a wrong field
type, so a validator that accepts everything cannot pass unnoticed.

    python .ci/manifests.py HELM CHART OUT_DIR VALUES_FILE...
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1
from packaging.version import Version
from pydantic import BaseModel
from pydantic import ValidationError as ModelError

Doc = dict[str, Any]
CRDS: dict[tuple[str, str], type[BaseModel]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring_v1.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring_v1.PrometheusRule,
}


class Invalid(Exception):
    """A document the API server would refuse."""


def claimed_versions(chart: Path) -> tuple[str, str, str]:
    """(one minor below the oldest, oldest, newest) Kubernetes versions to check.

    The oldest is kubeVersion's lower bound; the newest is the newest version
    the schema package ships below kubeVersion's upper bound, if it has one.
    """
    constraint = yaml.safe_load((chart / "Chart.yaml").read_text())["kubeVersion"]
    lower = re.search(r">=\s*v?(\d+)\.(\d+)\.\d+", constraint)
    if lower is None:
        raise SystemExit(f"Chart.yaml kubeVersion {constraint!r} has no >= lower bound")
    upper = re.search(r"<\s*v?(\d+\.\d+\.\d+)", constraint)
    major, minor = int(lower[1]), int(lower[2])
    oldest = f"{major}.{minor}.0"
    shipped = sorted({Version(v) for v in kubernetes_validate.utils.all_versions()})
    if Version(oldest) not in shipped:
        raise SystemExit(
            f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for "
            f"Kubernetes {oldest}, the oldest Chart.yaml claims"
        )
    newest = max(v for v in shipped if upper is None or v < Version(upper[1]))
    return f"{major}.{minor - 1}.0", oldest, str(newest)


def render(helm: str, chart: Path, values: Path, kube_version: str) -> list[Doc]:
    run = subprocess.run(  # noqa: S603 - our pinned helm, our chart
        [
            helm,
            "template",
            "lint",
            str(chart),
            "-n",
            "alerting",
            "-f",
            str(values),
            "--kube-version",
            kube_version,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise Invalid(f"helm template --kube-version {kube_version} -f {values}:\n{run.stderr}")
    return [d for d in yaml.safe_load_all(run.stdout) if d is not None]


def dropped_fields(given: Any, kept: Any, path: str = "") -> Iterator[str]:
    """Paths present in the document that the model did not keep."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                yield f"{path}.{key}".lstrip(".")
            else:
                yield from dropped_fields(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept, strict=False)):
            yield from dropped_fields(a, b, f"{path}[{i}]")


def validate(doc: Doc, kube_version: str) -> None:
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    crd = CRDS.get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if crd is not None:
        try:
            model = crd.model_validate_json(json.dumps(doc), strict=True)
        except ModelError as e:
            raise Invalid(f"{name}: {e}") from e
        kept = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
        unknown = list(dropped_fields(doc, kept))
        if unknown:
            raise Invalid(f"{name}: unknown fields {unknown}")
        return
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        raise Invalid(f"{name}: {where}: {e.message}") from e
    except kubernetes_validate.SchemaNotFoundError as e:
        # An unknown kind or apiVersion is an error too: the server would refuse it.
        raise Invalid(f"{name}: {e.message}") from e


def first(docs: list[Doc], kind: str) -> Doc:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind))


def must_reject(doc: Doc, kube_version: str, what: str) -> None:
    try:
        validate(doc, kube_version)
    except Invalid:
        return
    raise SystemExit(f"the validator accepted {what}: it checks nothing")


# A wrong type or an unknown field in one document of each validator's kinds.
MUTATIONS: list[tuple[str, str, tuple[str | int, ...], Any]] = [
    ("Deployment", "replicas as a string", ("spec", "replicas"), "2"),
    (
        "Deployment",
        "an unknown container field",
        ("spec", "template", "spec", "containers", 0, "imagePullPolice"),
        "Always",
    ),
    ("Service", "a port number as a list", ("spec", "ports", 0, "port"), [8080]),
    ("ServiceMonitor", "an interval as a number", ("spec", "endpoints", 0, "interval"), 30),
    ("ServiceMonitor", "an unknown endpoint field", ("spec", "endpoints", 0, "intervall"), "30s"),
    ("PrometheusRule", "rules as a mapping", ("spec", "groups", 0, "rules"), {"alert": "x"}),
]


def self_check(docs: list[Doc], kube_version: str) -> None:
    for kind, what, path, value in MUTATIONS:
        doc = first(docs, kind)
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = value
        must_reject(doc, kube_version, f"a {kind} with {what}")


def main(helm: str, chart: Path, out: Path, values_files: list[Path]) -> int:
    below, oldest, newest = claimed_versions(chart)
    try:
        render(helm, chart, values_files[0], below)
    except Invalid as e:
        if "incompatible with Kubernetes" not in str(e):
            raise
    else:
        raise SystemExit(f"helm rendered for Kubernetes {below}: kubeVersion is not what it seems")
    failures: list[str] = []
    counted = 0
    for kube_version in sorted({oldest, newest}, key=Version):
        for values in values_files:
            try:
                docs = render(helm, chart, values, kube_version)
            except Invalid as e:
                failures.append(str(e))
                continue
            (out / f"{values.stem}-{kube_version}.yaml").write_text(yaml.safe_dump_all(docs))
            if kube_version == oldest and values == values_files[0]:
                self_check(docs, kube_version)
            for doc in docs:
                counted += 1
                try:
                    validate(doc, kube_version)
                except Invalid as e:
                    failures.append(f"Kubernetes {kube_version}, {values.name}: {e}")
    for failure in failures:
        print(f"[lint] INVALID {failure}", file=sys.stderr)
    if failures:
        return 1
    crd_source = importlib.metadata.version("cloudcoil-models-prometheus-operator")
    print(
        f"{counted} documents valid for Kubernetes {oldest} and {newest} "
        f"(kubernetes-validate {kubernetes_validate.__version__}, strict), "
        f"CRDs of prometheus-operator {crd_source}; {below} refused by kubeVersion",
    )
    return 0


if __name__ == "__main__":
    helm_bin, chart_dir, out_dir, *values_args = sys.argv[1:]
    sys.exit(main(helm_bin, Path(chart_dir), Path(out_dir), [Path(v) for v in values_args]))
