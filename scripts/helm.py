#!/usr/bin/env python3
"""Helm for prewarm's tests, through the real Helm library (PyPI helm-sdkpy):
lint a chart, install or upgrade a release with helm's --set syntax, uninstall.
Prints the result as JSON on stdout; exits 1 with Helm's message on failure.

  helm.py lint CHART
  helm.py install|upgrade RELEASE CHART --kubeconfig FILE [--namespace NS]
          [--set K=V ...] [--set-json K=JSON ...]
  helm.py uninstall RELEASE --kubeconfig FILE [--namespace NS]
"""

import argparse
import asyncio
import json
import re
import sys

import helm_sdkpy


def scalar(text):
    """A --set value as helm types it: booleans, null, integers, else strings."""
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return int(text)
    return text


def put(values, key, value):
    """Sets the dotted `key` of `values` to `value`."""
    node = values
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--set {key}: {part} is not a map")
    node[parts[-1]] = value


def set_values(assignments, json_assignments):
    """helm's --set (comma-separated key.path=value pairs; `\\,` keeps a
    comma), then --set-json (key.path=JSON, one per flag)."""
    values = {}
    for assignment in assignments:
        for pair in re.split(r"(?<!\\),", assignment):
            if "=" not in pair:
                raise SystemExit(f"--set {pair!r}: expected key=value")
            key, value = pair.split("=", 1)
            put(values, key, scalar(value.replace("\\,", ",")))
    for assignment in json_assignments:
        key, _, text = assignment.partition("=")
        try:
            put(values, key, json.loads(text))
        except json.JSONDecodeError as e:
            raise SystemExit(f"--set-json {assignment!r}: {e}")
    return values


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["lint", "install", "upgrade", "uninstall"])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--set-json", action="append", default=[], dest="json_sets")
    args = parser.parse_args()
    config = helm_sdkpy.Configuration(namespace=args.namespace, kubeconfig=args.kubeconfig)
    if args.action == "lint":
        result = await helm_sdkpy.Lint(config).run(args.names[0])
    elif args.action == "uninstall":
        result = await helm_sdkpy.Uninstall(config).run(args.names[0], wait=False)
    else:
        release, chart = args.names
        values = set_values(args.sets, args.json_sets)
        if args.action == "install":
            result = await helm_sdkpy.Install(config).run(release, chart, values, wait=False)
        else:
            result = await helm_sdkpy.Upgrade(config).run(release, chart, values, wait=False)
    json.dump(result, sys.stdout)


try:
    asyncio.run(main())
except helm_sdkpy.HelmError as e:
    print(f"helm: {e}", file=sys.stderr)
    sys.exit(1)
