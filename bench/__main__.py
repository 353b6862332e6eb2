"""`make bench`: every benchmark in turn, each in its own process (they start servers and
engines of their own and must not share a gRPC runtime or metrics registry)."""

from __future__ import annotations

import subprocess
import sys

BENCHES = (
    "engine_bench",
    "router_overhead",
    "throughput",
    "dataplane_recovery",
    "reconciler_bench",
    "api_bench",
)


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"\n=== bench.{name} ===", flush=True)
        if subprocess.call([sys.executable, "-m", f"bench.{name}", *sys.argv[1:]]) != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
