"""``python -m e2e.controlplane {build,up,down,env}``: manage the local control plane.

build            build (or find) etcd, kube-apiserver, kubectl, helm and promtool; print
                 their paths
crds             fetch (or find) the upstream CRDs (CloudNativePG, Zalando, provider-aws)
up --dir D       start etcd + kube-apiserver, write D/kubeconfig, return when ready
down --dir D     stop both and remove D
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from e2e import controlplane


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.controlplane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or find the binaries and print their paths")
    sub.add_parser("crds", help="fetch or find the upstream CRDs and print their paths")
    for name in ("up", "down"):
        p = sub.add_parser(name, help=f"{name} the control plane")
        p.add_argument("--dir", type=Path, required=True, help="state directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name, path in asdict(controlplane.binaries()).items():
                print(f"{name}={path}")
        elif args.command == "crds":
            for kind, path in controlplane.upstream_crds().items():
                print(f"{kind}={path}")
        elif args.command == "up":
            state = controlplane.up(args.dir)
            print(f"control plane ready at {state.server}")
            print(f"export KUBECONFIG={state.kubeconfig}")
            print(f"# the apiserver's webhook client CA: {state.webhook_client_ca}")
        else:
            controlplane.down(args.dir)
            print(f"control plane in {args.dir} stopped")
    except controlplane.ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
