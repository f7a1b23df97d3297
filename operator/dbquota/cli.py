"""The ``dbquota`` command: ``run`` the operator, print its ``settings``, and more.

The entry point of the console script (``pyproject.toml``) and of ``python -m dbquota``.
Flags of ``run`` come from the settings tree (:mod:`dbquota.settings`); this module only
parses, sets up logging (in ``run``'s ``--log-format``, :mod:`dbquota.kits.logs`) and
hands over. ``run`` turns on :mod:`faulthandler` before the operator starts, so that a
crash below Python (a segfault in a C extension) or a fatal error leaves every thread's
stack on stderr, in the pod's log, not just a restart; that dump is plain text in either
log format, as it is written without Python's help.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys

from dbquota import __version__, settings, simulator
from dbquota.kits import logs


def _settings_table() -> str:
    rows = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for knob in settings.knobs():
        unit = f" ({knob.unit})" if knob.unit else ""
        # A switch is turned off by its --no- form: argparse takes no value after it.
        flag = f"`{knob.flag}`" + (
            f", `--no-{knob.flag[2:]}`" if isinstance(knob.default, bool) else ""
        )
        rows.append(f"| {flag} | `{knob.env}` | `{knob.default_text}` | {knob.help}{unit} |")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; ``run``'s flags default to their ``DBQUOTA_*`` variables."""
    parser = argparse.ArgumentParser(prog="dbquota", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dbquota {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator (kopf handlers and the webhook)")
    settings.add_arguments(run, os.environ)
    run.set_defaults(parser=run)  # to report a rule between flags broken (_run)
    sub.add_parser("settings", help="print every setting as a Markdown table")
    sim = sub.add_parser(
        "billing-sim", help="serve a simulated billing provider with fault injection"
    )
    simulator.add_arguments(sim)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit code."""
    try:
        parser = build_parser()
    except (argparse.ArgumentTypeError, ValueError) as exc:  # a bad DBQUOTA_* variable
        print(f"dbquota: error: bad environment variable: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logs.setup(
        getattr(args, "log_format", "text"),  # a flag of run's only
        level=logging.DEBUG if args.verbose else logging.INFO,
    )
    commands = {"settings": _print_settings, "run": _run, "billing-sim": _billing_sim}
    return commands[args.command](args)


def _print_settings(_: argparse.Namespace) -> int:
    print(_settings_table())
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = settings.from_namespace(args)
    except ValueError as exc:  # each flag in range, but out of order (LeaseSettings)
        parser: argparse.ArgumentParser = args.parser
        parser.error(str(exc))  # one line and exit 2, as for one bad flag
    from dbquota.handlers import operating  # noqa: PLC0415 - import kopf only when running

    faulthandler.enable()
    operating.run(cfg)
    return 0


def _billing_sim(args: argparse.Namespace) -> int:
    from dbquota.simulator import server  # noqa: PLC0415 - load aiohttp only when serving

    return server.run(args)


if __name__ == "__main__":
    sys.exit(main())
