#!/usr/bin/env python3
"""Checks that the workspace's declared `rust-version` is honest: every
package the published crates build on (normal and build dependencies,
locked versions, this machine's target) declares a `rust-version` no newer
than the workspace's. Prints the newest ones; exits 1 on a violation."""
import json
import subprocess
import sys

def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout

meta = json.loads(run("cargo", "metadata", "--format-version", "1", "--locked", "--offline"))
by_id = {p["id"]: p for p in meta["packages"]}
members = [by_id[i] for i in meta["workspace_members"]]
declared = next(p["rust_version"] for p in members if p["name"] == "ripcord")
published = [p["name"] for p in members if p.get("publish") is None]

def version(v):
    parts = [int(x) for x in (v or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

used = set()
for name in published:
    tree = run("cargo", "tree", "--locked", "--offline", "-p", name, "-e", "normal,build",
               "--all-features", "--prefix", "none", "--format", "{p}")
    for line in tree.splitlines():
        parts = line.replace(" (*)", "").split()
        if len(parts) >= 2:
            used.add((parts[0], parts[1].lstrip("v")))

newest = sorted(
    ((version(p.get("rust_version")), p["name"], p["version"])
     for p in meta["packages"] if (p["name"], p["version"]) in used),
    reverse=True,
)
print(f"declared rust-version {declared}; the newest requirements of what the published crates build on:")
for v, n, ver in newest[:5]:
    print(f"  {n} {ver}: rust {'.'.join(map(str, v)) if v != (0, 0, 0) else '(none declared)'}")
bad = [(v, n, ver) for v, n, ver in newest if v > version(declared)]
if bad:
    for v, n, ver in bad:
        print(f"error: {n} {ver} needs rust {'.'.join(map(str, v))}, newer than the declared {declared}",
              file=sys.stderr)
    sys.exit(1)
