#!/usr/bin/env python3
"""Writes tests/src/protobuf/schema.rs: the protobuf field numbers and JSON
names of the built-in messages the test API server decodes.

Field numbers and wire types come from the k8s-pb crate (kube-rs's generated
prost types of Kubernetes' generated.proto), JSON names from k8s-openapi (its
serde field names), both as cargo has them in its registry. Only messages
reachable from the kinds the server stores are written.

    scripts/protobuf-schema.py > tests/src/protobuf/schema.rs

k8s-pb is not a dependency of the workspace (nothing compiles it): when cargo
has not downloaded it yet, the script fetches it through a scratch crate.
"""

import glob
import os
import re
import subprocess
import sys
import tempfile

REGISTRY = os.path.expanduser("~/.cargo/registry/src")
K8S_PB = "k8s-pb-0.8.0"
K8S_OPENAPI = "k8s-openapi-0.29.0"
OPENAPI_VERSION = "v1_37"

ROOTS = [
    "io.k8s.api.core.v1." + k
    for k in ["Namespace", "Node", "Pod", "Service", "ServiceAccount", "Endpoints", "Secret", "ConfigMap", "Event"]
] + [
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.apps.v1.DaemonSet",
    "io.k8s.api.rbac.v1.Role",
    "io.k8s.api.rbac.v1.ClusterRole",
    "io.k8s.api.rbac.v1.RoleBinding",
    "io.k8s.api.rbac.v1.ClusterRoleBinding",
    "io.k8s.api.policy.v1.PodDisruptionBudget",
    "io.k8s.api.coordination.v1.Lease",
    "io.k8s.api.events.v1.Event",
    "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
    "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    "io.k8s.api.authentication.v1.TokenRequest",
    "io.k8s.api.authentication.v1.SelfSubjectReview",
    "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
    "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
]

# Messages with a JSON form of their own (decoded by kind in protobuf/mod.rs),
# by their k8s-pb (prost) names.
SPECIAL = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "io.k8s.apimachinery.pkg.runtime.RawExtension": "RawJson",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.Json": "RawJson",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray": "SchemaOrArray",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool": "SchemaOrBool",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray": "SchemaOrStringArray",
    "io.k8s.api.authorization.v1.ExtraValue": "StringList",
    "io.k8s.api.authentication.v1.ExtraValue": "StringList",
}

SCALARS = {"string": "Str", "bool": "Bool", "int32": "Int", "int64": "Int", "double": "Double", "bytes": "Bytes"}


def package_of(path, root):
    rel = os.path.relpath(os.path.dirname(path), root).split(os.sep)
    if rel[0] == "api":
        return "io.k8s.api." + ".".join(rel[1:])
    if rel[0] == "apimachinery":
        return "io.k8s.apimachinery." + ".".join(rel[1:])
    if rel[0] == "apiextensions_apiserver":
        return "io.k8s.apiextensions-apiserver." + ".".join(rel[1:])
    return None


def resolve(package, rust_path):
    """The proto name of a Rust type path written in module `package`."""
    parts = rust_path.split("::")
    pkg = package.split(".")
    # Modules below the crate root: io.k8s.api.core.v1 is api::core::v1.
    base = {"io.k8s.api": 3, "io.k8s.apimachinery": 2, "io.k8s.apiextensions-apiserver": 2}
    head = next(k for k in base if package.startswith(k + "."))
    modules = [head] + package[len(head) + 1:].split(".")
    while parts and parts[0] == "super":
        parts.pop(0)
        modules.pop()
    names = {"api": "io.k8s.api", "apimachinery": "io.k8s.apimachinery",
             "apiextensions_apiserver": "io.k8s.apiextensions-apiserver"}
    if not modules:
        modules = [names[parts.pop(0)]]
    return ".".join(modules + parts)


def registry_source(crate):
    found = glob.glob(os.path.join(REGISTRY, "*", crate))
    if not found:
        name, version = crate.rsplit("-", 1)
        with tempfile.TemporaryDirectory() as scratch:
            with open(os.path.join(scratch, "Cargo.toml"), "w") as manifest:
                manifest.write(f'[package]\nname = "scratch"\nversion = "0.0.0"\n'
                               f'[lib]\npath = "lib.rs"\n[dependencies]\n{name} = "={version}"\n')
            open(os.path.join(scratch, "lib.rs"), "w").close()
            subprocess.run(["cargo", "fetch", "--quiet"], cwd=scratch, check=True, stdout=sys.stderr)
        found = glob.glob(os.path.join(REGISTRY, "*", crate))
    return found[0]


def read_k8s_pb():
    root = os.path.join(registry_source(K8S_PB), "src")
    messages = {}
    for path in glob.glob(os.path.join(root, "**", "mod.rs"), recursive=True):
        package = package_of(path, root)
        if package is None:
            continue
        text = open(path).read()
        for struct in re.finditer(r"pub struct (\w+) \{(\}|.*?\n\})", text, re.S):
            fields = []
            for chunk in struct.group(2).split("#[prost(")[1:]:
                attr, rest = chunk.split(")]", 1)
                name = re.search(r"pub (?:r#)?(\w+):", rest).group(1)
                rust_type = re.sub(r"\s+", "", rest.split(":", 1)[1].split("///")[0])
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                kind = attr.split(",")[0].split("=")[0].strip()
                repeated = "repeated" in attr
                if kind == "btree_map":
                    key, value = re.search(r'btree_map = "(\w+), (\w+)"', attr).groups()
                    target = None
                    if value == "message":
                        target = resolve(package, re.search(r"BTreeMap<[^,]+,([\w:]+),?>", rust_type).group(1))
                    fields.append((tag, name, "map", value, target, False))
                elif kind == "message":
                    inner = re.search(r"(?:Option|Vec)<(?:::prost::alloc::boxed::Box<)?([\w:]+),?>", rust_type).group(1)
                    fields.append((tag, name, "message", None, resolve(package, inner), repeated))
                else:
                    fields.append((tag, name, kind, None, None, repeated))
            messages[package + "." + struct.group(1)] = fields
    return messages


def read_json_names():
    """Per folded type name: the proto name (as k8s-openapi spells it, which is
    also the OpenAPI definition's) and the JSON field names by folded name."""
    root = os.path.join(registry_source(K8S_OPENAPI), "src", OPENAPI_VERSION)
    names = {}
    for path in glob.glob(os.path.join(root, "**", "*.rs"), recursive=True):
        text = open(path).read()
        struct = re.search(r"pub struct (\w+)", text)
        if not struct:
            continue
        rel = os.path.relpath(os.path.dirname(path), root).split(os.sep)
        if rel[0] == "api":
            package = "io.k8s.api." + ".".join(rel[1:])
        elif rel[0] == "apimachinery":
            package = "io.k8s.apimachinery." + ".".join(rel[1:])
        elif rel[0] == "apiextensions_apiserver":
            package = "io.k8s.apiextensions-apiserver." + ".".join(rel[1:])
        else:
            continue
        keys = re.findall(r'"([A-Za-z$][\w$-]*)" => Field::Key_\w+', text)
        proto_name = package + "." + struct.group(1)
        names[fold(package + "." + struct.group(1))] = (proto_name, {fold(k): k for k in keys})
    return names


def fold(name):
    """prost renames types and fields (HostIP is HostIp, podIPs pod_ips, but
    podCIDRs pod_cid_rs): names are matched without case and underscores."""
    return re.sub(r"[-_$]", "", name).lower()


def main():
    messages = read_k8s_pb()
    openapi = read_json_names()
    # Each wanted message's proto name and JSON names: its own k8s-openapi
    # type's, or for a message embedded inline (Go's `json:",inline"`, such as
    # a Volume's VolumeSource), the embedding type's.
    names = {}
    queue = [(root, None) for root in ROOTS]
    while queue:
        name, parent = queue.pop()
        if name in names or name in SPECIAL:
            continue
        if name not in messages:
            sys.exit(f"message {name} is not in {K8S_PB}")
        names[name] = openapi.get(fold(name)) or (name, names[parent][1])
        queue.extend((f[4], name) for f in messages[name] if f[4])
    out = [
        "//! Generated by scripts/protobuf-schema.py from the k8s-pb crate (field",
        "//! numbers) and k8s-openapi (JSON names): the messages reachable from the",
        "//! kinds the test API server stores. Do not edit; run the script again.",
        "",
        "use super::{Field, Kind, Message};",
        "",
        "#[rustfmt::skip]",
        "pub(super) static MESSAGES: &[Message] = &[",
    ]
    for name in sorted(names, key=lambda n: names[n][0]):
        proto, known = names[name]
        out.append(f"    Message {{ name: {rust_str(proto)}, fields: &[")
        for tag, field, kind, value, target, repeated in sorted(messages[name]):
            json = known.get(fold(field))
            inline = json is None and kind == "message" and target not in SPECIAL
            if json is None and not inline:
                sys.exit(f"{name}.{field}: no JSON name in k8s-openapi {OPENAPI_VERSION}")
            json = json or ""
            if inline:
                rust_kind = f"Kind::Inline({rust_str(names[target][0])})"
            elif kind == "map":
                rust_kind = f"Kind::Map(&{kind_of(value, target and names.get(target, (target,))[0])})"
            else:
                rust_kind = kind_of(kind, target and names.get(target, (target,))[0])
            out.append(
                f"        Field {{ number: {tag}, json: {rust_str(json)}, kind: {rust_kind}, repeated: {str(repeated).lower()} }},"
            )
        out.append("    ] },")
    out.append("];")
    print("\n".join(out))


def kind_of(kind, target):
    if kind == "message":
        special = next((v for k, v in SPECIAL.items() if target == k), None)
        if special:
            return f"Kind::{special}"
        return f"Kind::Message({rust_str(target)})"
    return f"Kind::{SCALARS[kind]}"


def rust_str(text):
    return '"' + text + '"'


if __name__ == "__main__":
    main()
