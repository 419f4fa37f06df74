#!/usr/bin/env python3
"""Policy check of rendered Kubernetes manifests (the output of `helm template`).

Fails when:
  NO_LIMITS / NO_REQUESTS   a container or init container lacks cpu and memory limits / requests
  RUN_AS_ROOT               runAsNonRoot is not true (container or pod level), or runAsUser is 0
  PRIV_ESCALATION           allowPrivilegeEscalation is not explicitly false
  PRIVILEGED                privileged: true
  CAPABILITIES              capabilities.drop lacks ALL, or capabilities are added
  SECCOMP                   no RuntimeDefault/Localhost seccomp profile (container or pod level)
  IMAGE_TAG                 an image without a tag or digest, or tagged latest
  LITERAL_SECRET            a credential written literally in a values file shows up in the output
                            (Secret data is base64-decoded before the search)
  SECRET_ENV                an env var named like a credential has a literal `value:`
  FORBIDDEN_STRING          the default credentials of the original design (minioadmin) or
                            tlakeadmin appear anywhere, decoded Secret data included
  BAD_TOML                  a ConfigMap's *.toml entry (gateway.toml, compactor.toml) does not parse
  NO_WORKLOADS              nothing to check: the check must not pass vacuously

Usage: check_manifests.py [--values VALUES.yaml ...] [--extract-scripts DIR] MANIFEST.yaml ...
Prints one line per violation as `FAIL RULE kind/name[ container]: detail` and exits 1 if any.
With --extract-scripts, also writes every shell script of the manifests (ConfigMap entries that
start with #!, and `sh -c` / `bash -c` container commands) to DIR as <name>.sh or <name>.bash,
for a syntax check and shellcheck.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import sys
from dataclasses import dataclass, field

import tomllib
import yaml

FORBIDDEN = ("minioadmin", "tlakeadmin")

# Values keys whose string value is a credential (compared without case, '-' and '_').
CREDENTIAL_KEYS = re.compile(
    r"^(password|passwd|secret|secretkey|accesskey|accesskeyid|secretaccesskey|token|tokens|"
    r"apikey|rootuser|rootpassword|clientsecret|credentials?|.*password|.*token)$"
)
# Values subtrees that name keys of a Secret rather than hold credentials.
NOT_CREDENTIAL_SUBTREES = re.compile(r"^(secretkeys|existingsecret.*|.*secretname)$")

# Env var names that announce a credential, and literal values that are only references to one.
SECRET_ENV_NAME = re.compile(
    r"(passw|secret|token|credential|private[-_]?key|access[-_]?key|api[-_]?key)", re.IGNORECASE
)
REFERENCE_VALUE = re.compile(r"^(urn:|/|\$\()")

POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    containers: int = 0
    workloads: int = 0

    def fail(self, rule: str, where: str, detail: str) -> None:
        self.failures.append(f"FAIL {rule} {where}: {detail}")


def dig(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def norm(key: str) -> str:
    return re.sub(r"[-_]", "", str(key)).lower()


def credentials_in_values(node, path=()) -> set[str]:
    """Every non-empty string under a credential-named key of a values file."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if NOT_CREDENTIAL_SUBTREES.match(norm(key)):
                continue
            # Shorter strings would match by accident anywhere in the output.
            if isinstance(value, str) and len(value) >= 4 and CREDENTIAL_KEYS.match(norm(key)):
                found.add(value)
            else:
                found |= credentials_in_values(value, path + (key,))
    elif isinstance(node, list):
        for item in node:
            found |= credentials_in_values(item, path)
    return found


def image_problem(image: str) -> str | None:
    if not image:
        return "no image"
    if "@sha256:" in image:
        return None
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return f"{image} has no tag"
    if name.rsplit(":", 1)[1] == "latest":
        return f"{image} uses the latest tag"
    return None


def check_container(report: Report, where: str, c: dict, pod_sc: dict) -> None:
    report.containers += 1
    at = f"{where} container={c.get('name')}"
    res = c.get("resources") or {}
    for kind, rule in (("limits", "NO_LIMITS"), ("requests", "NO_REQUESTS")):
        missing = [r for r in ("cpu", "memory") if not dig(res, kind, r)]
        if missing:
            report.fail(rule, at, f"resources.{kind} lacks {', '.join(missing)}")

    sc = c.get("securityContext") or {}
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if non_root is not True:
        report.fail("RUN_AS_ROOT", at, "runAsNonRoot is not true in the container or pod securityContext")
    elif user == 0:
        report.fail("RUN_AS_ROOT", at, "runAsUser is 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        report.fail("PRIV_ESCALATION", at, "allowPrivilegeEscalation is not false")
    if sc.get("privileged") is True:
        report.fail("PRIVILEGED", at, "privileged is true")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        report.fail("CAPABILITIES", at, "capabilities.drop does not contain ALL")
    if caps.get("add"):
        report.fail("CAPABILITIES", at, f"capabilities.add {caps['add']}")
    seccomp = dig(sc, "seccompProfile", "type") or dig(pod_sc, "seccompProfile", "type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        report.fail("SECCOMP", at, "no RuntimeDefault seccomp profile")

    problem = image_problem(c.get("image", ""))
    if problem:
        report.fail("IMAGE_TAG", at, problem)

    for env in c.get("env") or []:
        name, value = env.get("name", ""), env.get("value")
        if "valueFrom" in env or not value or not SECRET_ENV_NAME.search(name):
            continue
        if REFERENCE_VALUE.match(str(value)):
            continue
        report.fail("SECRET_ENV", at, f"env {name} has a literal value; use valueFrom.secretKeyRef")


def decoded_secret_texts(doc: dict) -> list[str]:
    texts = []
    for value in (doc.get("data") or {}).values():
        try:
            texts.append(base64.b64decode(str(value), validate=True).decode("utf-8", "replace"))
        except (binascii.Error, ValueError):
            texts.append(str(value))
    texts.extend(str(v) for v in (doc.get("stringData") or {}).values())
    return texts


def extract_scripts(manifest_texts: list[str], directory: str) -> int:
    """Writes the manifests' shell scripts to `directory`; returns how many."""
    os.makedirs(directory, exist_ok=True)
    written = 0

    def write(name: str, shell: str, body: str) -> None:
        nonlocal written
        stem = re.sub(r"\.(sh|bash)$", "", re.sub(r"[^A-Za-z0-9_.-]", "_", name))
        path = os.path.join(directory, f"{stem}.{shell}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(body if body.startswith("#!") else f"#!/bin/{shell}\n{body}")
        written += 1

    for text in manifest_texts:
        for doc in yaml.safe_load_all(text):
            if not isinstance(doc, dict) or "kind" not in doc:
                continue
            name = dig(doc, "metadata", "name")
            if doc["kind"] == "ConfigMap":
                for key, body in (doc.get("data") or {}).items():
                    first = str(body).split("\n", 1)[0]
                    if first.startswith("#!") and ("sh" in first):
                        write(f"{name}--{key}", "bash" if "bash" in first else "sh", str(body))
            path = POD_SPEC_PATHS.get(doc["kind"])
            spec = dig(doc, *path) if path else None
            for c in (spec or {}).get("initContainers", []) + (spec or {}).get("containers", []):
                cmd = c.get("command") or []
                if len(cmd) >= 3 and os.path.basename(cmd[0]) in ("sh", "bash") and re.match(r"^-[a-z]*c$", cmd[1]):
                    shell = os.path.basename(cmd[0])
                    write(f"{name}--{c.get('name')}", shell, cmd[2])
    return written


def check(manifest_texts: list[str], credentials: set[str]) -> Report:
    report = Report()
    for text in manifest_texts:
        for doc in yaml.safe_load_all(text):
            if not isinstance(doc, dict) or "kind" not in doc:
                continue
            kind = doc["kind"]
            where = f"{kind}/{dig(doc, 'metadata', 'name')}"
            haystack = [yaml.safe_dump(doc)]
            if kind == "Secret":
                haystack += decoded_secret_texts(doc)
            blob = "\n".join(haystack)
            for word in FORBIDDEN:
                if word in blob.lower():
                    report.fail("FORBIDDEN_STRING", where, f"contains {word!r}")
            for cred in sorted(credentials):
                if cred in blob:
                    report.fail("LITERAL_SECRET", where, "contains a credential written literally in values")

            if kind == "ConfigMap":
                for key, value in (doc.get("data") or {}).items():
                    if key.endswith(".toml"):
                        try:
                            tomllib.loads(str(value))
                        except tomllib.TOMLDecodeError as e:
                            report.fail("BAD_TOML", where, f"{key}: {e}")

            path = POD_SPEC_PATHS.get(kind)
            if not path:
                continue
            spec = dig(doc, *path) or {}
            report.workloads += 1
            pod_sc = spec.get("securityContext") or {}
            for key in ("initContainers", "containers", "ephemeralContainers"):
                for c in spec.get(key) or []:
                    check_container(report, where, c, pod_sc)
    if report.workloads == 0 or report.containers == 0:
        report.fail("NO_WORKLOADS", "-", "no pod template found: nothing was checked")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", action="append", default=[], help="values file the manifests were rendered with")
    parser.add_argument("--extract-scripts", metavar="DIR", help="also write the manifests' shell scripts here")
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args()

    credentials: set[str] = set()
    for path in args.values:
        with open(path, encoding="utf-8") as f:
            credentials |= credentials_in_values(yaml.safe_load(f) or {})
    texts = []
    for path in args.manifests:
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())

    if args.extract_scripts:
        count = extract_scripts(texts, args.extract_scripts)
        print(f"extracted {count} shell scripts to {args.extract_scripts}")

    report = check(texts, credentials)
    for line in report.failures:
        print(line)
    print(
        f"checked {report.workloads} workloads, {report.containers} containers, "
        f"{len(credentials)} credential values: {len(report.failures)} violations"
    )
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
