"""``contact-server`` command line: serve, validate, call (IVR simulator), voice, db.

Sub-commands import their heavy dependencies (torch, SQLAlchemy models) only when run, so ``validate`` and
``--help`` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_serve(args: argparse.Namespace) -> int:
    from ivr.app import run_server

    return run_server(args.config, seed_demo=args.seed_demo)


def _cmd_validate(args: argparse.Namespace) -> int:
    from ivr.validate_all import validate_tree

    problems = validate_tree(Path(args.path))
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(p, file=sys.stderr if p.severity == "error" else sys.stdout)
    if errors:
        print(f"{len(errors)} error(s): the configuration was NOT accepted.", file=sys.stderr)
        return 1
    print(f"configuration OK ({len(problems)} warning(s))")
    return 0


def _cmd_call(args: argparse.Namespace) -> int:
    from ivr.simulator import simulator_main

    return simulator_main(args)


def _cmd_voice(args: argparse.Namespace, rest: list[str]) -> int:
    if args.voice_cmd == "eval":
        from voiceauth.evaluation import voice_eval_main

        return voice_eval_main(rest) or 0
    if args.voice_cmd == "rotate-key":
        from ivr.key_rotation import rotate_key_main

        return rotate_key_main(rest)
    print("usage: contact-server voice eval TRIALS.csv --root DIR [...] | voice rotate-key --new-key-file F",
          file=sys.stderr)
    return 2


def _cmd_db(args: argparse.Namespace) -> int:
    from ivr.app import database_main

    return database_main(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="contact-server", description="Voice contact server")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the server")
    s.add_argument("--config", default="config/server.yaml", help="server.yaml (default: %(default)s)")
    s.add_argument("--seed-demo", action="store_true", help="load the demo customers and agents if missing")
    s.set_defaults(func=_cmd_serve)

    v = sub.add_parser("validate", help="validate a configuration directory or file; non-zero exit on errors")
    v.add_argument("path", nargs="?", default="config")
    v.set_defaults(func=_cmd_validate)

    c = sub.add_parser("call", help="place a real SIP call to a running server and print what happened")
    c.add_argument("--server", default="127.0.0.1:5060", help="host:port of the server")
    c.add_argument("--from", dest="caller", default="+393331234567", help="caller number (ANI)")
    c.add_argument("--to", dest="dialed", default="800100", help="dialed number (DNIS)")
    c.add_argument("--dtmf", action="append", default=[],
                   help="DIGITS@SECONDS: send digits (RFC 4733) at that many seconds after answer; repeatable")
    c.add_argument("--voice", help="WAV file streamed as the caller's voice")
    c.add_argument("--voice-at", type=float, default=0.0, help="seconds after answer to start the voice")
    c.add_argument("--duration", type=float, default=20.0, help="hang up after this many seconds")
    c.add_argument("--record", help="write what the caller heard to this WAV")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=_cmd_call)

    vo = sub.add_parser("voice", help="voice biometrics tools (eval, rotate-key)")
    vo.add_argument("voice_cmd", choices=["eval", "rotate-key"])
    vo.set_defaults(func=None)

    d = sub.add_parser("db", help="database: upgrade (migrations), seed-demo")
    d.add_argument("db_cmd", choices=["upgrade", "seed-demo"])
    d.add_argument("--config", default="config/server.yaml")
    d.set_defaults(func=_cmd_db)

    from ivr.campaign.cli import add_campaign_parser
    add_campaign_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    if argv[:1] == ["voice"]:
        args, rest = ap.parse_known_args(argv[:2])
        return _cmd_voice(args, argv[2:])
    args = ap.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
