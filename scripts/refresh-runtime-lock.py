#!/usr/bin/env python3
"""Recomputes the bundled runtime defaults in worker/requirements.lock.

The platform's rule for Python 3.13+: an app that does not list the runtime library in
its requirements runs "the stable release before the latest". This script asks the
package index for every stable release of azure-functions-runtime and
azure-functions-runtime-v1, picks the second newest of each, and rewrites the pins.

Usage: scripts/refresh-runtime-lock.py [--check]   (--check: exit 1 if the lock is stale)
Needs only the standard library and network access to pypi.org.
"""
import json
import re
import sys
import urllib.request
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "worker" / "requirements.lock"
PACKAGES = ("azure-functions-runtime", "azure-functions-runtime-v1")
STABLE = re.compile(r"^\d+(\.\d+)*$")


def stable_releases(package: str) -> list[tuple[int, ...]]:
    with urllib.request.urlopen(f"https://pypi.org/pypi/{package}/json", timeout=30) as r:
        releases = json.load(r)["releases"]
    versions = []
    for version, files in releases.items():
        if STABLE.match(version) and any(not f.get("yanked") for f in files):
            versions.append(tuple(int(p) for p in version.split(".")))
    return sorted(versions)


def main() -> int:
    text = LOCK.read_text()
    updated = text
    for package in PACKAGES:
        versions = stable_releases(package)
        if len(versions) < 2:
            print(f"{package}: fewer than two stable releases; leaving it", file=sys.stderr)
            continue
        latest, before = (".".join(map(str, v)) for v in versions[-1:-3:-1])
        updated = re.sub(rf"(?m)^{re.escape(package)}==\S+$", f"{package}=={before}", updated)
        print(f"{package}: latest {latest}, bundled default {before}")
    if updated == text:
        print("worker/requirements.lock is up to date")
        return 0
    if "--check" in sys.argv[1:]:
        print("worker/requirements.lock is stale: run scripts/refresh-runtime-lock.py", file=sys.stderr)
        return 1
    LOCK.write_text(updated)
    print("worker/requirements.lock updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
