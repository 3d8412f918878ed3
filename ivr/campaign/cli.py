"""``contact-server campaign create|list|status|pause|resume|stop``: outbound campaigns from the shell.

Works on the database named by ``server.yaml`` (or ``--db``), so it needs no running server; a running server
applies a state change at its next poll (``outbound.poll_seconds``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def add_campaign_parser(sub: Any) -> None:
    p = sub.add_parser("campaign", help="outbound survey campaigns: create, list, status, pause, resume, stop")
    p.add_argument("--config", default="config/server.yaml", help="server.yaml (its database is used)")
    p.add_argument("--db", help="database URL (instead of the one in server.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON")
    cs = p.add_subparsers(dest="campaign_cmd", required=True)
    c = cs.add_parser("create", help="create a campaign (a draft unless --start)")
    c.add_argument("--name", required=True)
    c.add_argument("--survey", required=True, help="survey script name (config/surveys)")
    c.add_argument("--language", default="it", choices=["it", "en"], help="default language of the survey")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", help="CSV file with a header: customer_id and/or phone (language optional)")
    src.add_argument("--segment", choices=["retail", "business", "critical"], help="CRM customers of a segment")
    src.add_argument("--all-customers", action="store_true", help="every CRM customer (with --customer-language)")
    c.add_argument("--customer-language", choices=["it", "en"], help="CRM query: only customers with this language")
    c.add_argument("--rules", help="YAML/JSON file with window, pacing, retries (see docs/campaigns.md)")
    c.add_argument("--timezone", help="calling window time zone (IANA), e.g. Europe/Rome")
    c.add_argument("--hours", action="append", default=[], metavar="DAYS=HH:MM-HH:MM",
                   help="calling window, e.g. mon-fri=09:00-20:00; repeatable")
    c.add_argument("--holiday", action="append", default=[], help="MM-DD, YYYY-MM-DD or easter_monday; repeatable")
    c.add_argument("--max-concurrent", type=int)
    c.add_argument("--per-minute", type=int, help="calls started per minute at most")
    c.add_argument("--ring-timeout", type=float)
    c.add_argument("--retry", action="append", default=[], metavar="OUTCOME=ATTEMPTS:DELAY_S",
                   help="no_answer|busy|failed=max attempts:seconds between them, e.g. busy=3:900; repeatable")
    c.add_argument("--region", default="IT", help="region of numbers written without +")
    c.add_argument("--start", action="store_true", help="start calling at once")
    cs.add_parser("list", help="every campaign with its progress")
    s = cs.add_parser("status", help="one campaign's progress")
    s.add_argument("id", type=int)
    s.add_argument("--contacts", action="store_true", help="list the contacts too")
    for cmd, text in (("pause", "no new calls; calls in progress finish"),
                      ("resume", "resume a paused campaign or start a draft"),
                      ("stop", "stop for good; contacts not reached become skipped")):
        x = cs.add_parser(cmd, help=text)
        x.add_argument("id", type=int)
    p.set_defaults(func=campaign_main)


def build_rules(args: argparse.Namespace) -> Any:
    from ivr.campaign.rules import CampaignRules

    data: dict[str, Any] = {}
    if args.rules:
        text = Path(args.rules).read_text()
        data = (json.loads(text) if args.rules.endswith(".json") else yaml.safe_load(text)) or {}
    window = dict(data.get("window") or {})
    if args.timezone:
        window["timezone"] = args.timezone
    if args.hours:
        hours: dict[str, list[str]] = {}
        for item in args.hours:
            days, sep, span = item.partition("=")
            if not sep:
                raise ValueError(f"--hours {item!r}: write DAYS=HH:MM-HH:MM, e.g. mon-fri=09:00-20:00")
            hours.setdefault(days.strip(), []).append(span.strip())
        window["hours"] = hours
    if args.holiday:
        window["holidays"] = list(args.holiday)
    if window:
        window.setdefault("timezone", "Europe/Rome")
        data["window"] = window
    pacing = dict(data.get("pacing") or {})
    for key, value in (("max_concurrent", args.max_concurrent), ("calls_per_minute", args.per_minute),
                       ("ring_timeout", args.ring_timeout)):
        if value is not None:
            pacing[key] = value
    if pacing:
        data["pacing"] = pacing
    retries = dict(data.get("retries") or {})
    for item in args.retry:
        outcome, sep, rest = item.partition("=")
        attempts, sep2, delay = rest.partition(":")
        if not sep or not sep2 or not attempts.isdigit():
            raise ValueError(f"--retry {item!r}: write OUTCOME=ATTEMPTS:DELAY_SECONDS, e.g. busy=3:900")
        retries[outcome.strip()] = {"max_attempts": int(attempts), "delay_seconds": float(delay)}
    if retries:
        data["retries"] = retries
    return CampaignRules.model_validate(data)


def _database(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from crm_bridge.db import Database
    from crm_bridge.migrate import upgrade_database
    from ivr.app import database_url
    from ivr.config import load_server_config

    url = args.db or database_url(load_server_config(args.config))
    upgrade_database(url)
    return Database.from_url(url, workers=1)


def _print_summary(c: dict[str, Any]) -> None:
    rate = "-" if c["response_rate"] is None else f"{c['response_rate'] * 100:.1f}%"
    states = ", ".join(f"{k} {v}" for k, v in c["by_state"].items() if v)
    print(f"#{c['id']} {c['name']} [{c['state']}] survey={c['survey']} done {c['done']}/{c['contacts']} "
          f"attempts {c['attempts']} response rate {rate} ({states})")


def campaign_main(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from crm_bridge import campaign_store as cs
    from crm_bridge.errors import NotFoundError

    try:
        db = _database(args)
    except Exception as exc:
        print(f"cannot open the database: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    try:
        cmd = args.campaign_cmd
        if cmd == "create":
            rules = build_rules(args)
            if args.csv:
                contacts: Any = cs.parse_contacts_csv(Path(args.csv).read_bytes())
                source: dict[str, Any] = {"kind": "csv", "file": Path(args.csv).name}
            else:
                source = {"kind": "query", "segment": args.segment, "language": args.customer_language}
                contacts = None

            def create(s):  # type: ignore[no-untyped-def]
                rows = contacts if contacts is not None else cs.contacts_from_query(
                    s, segment=args.segment, language=args.customer_language)
                cid, report = cs.create_campaign(s, name=args.name, survey=args.survey, rules=rules, contacts=rows,
                                                 language=args.language, source=source, region=args.region,
                                                 start=args.start, now=now)
                s.flush()
                return cs.campaign_summary(s, cid), report.as_dict()
            summary, report = db.run_sync(create)
            if args.json:
                print(json.dumps({**summary, "import": report}, indent=2))
            else:
                _print_summary(summary)
                print(f"contacts: {report['added']} added, {report['opted_out']} on the do-not-call list, "
                      f"{report['duplicates']} duplicates, {report['failed']} rows with errors")
                for e in report["errors"]:
                    print(f"  row {e['row']}: {e['value']}: {e['error']}")
        elif cmd == "list":
            items = db.read_sync(cs.list_campaigns)
            if args.json:
                print(json.dumps(items, indent=2))
            for c in [] if args.json else items:
                _print_summary(c)
            if not items and not args.json:
                print("no campaigns")
        elif cmd == "status":
            summary = db.read_sync(lambda s: cs.campaign_summary(s, args.id))
            contacts_rows = db.read_sync(lambda s: cs.contact_rows(s, args.id, limit=100_000)) \
                if args.contacts else None
            if args.json:
                print(json.dumps({**summary, **({"contacts_list": contacts_rows} if contacts_rows else {})},
                                 indent=2))
            else:
                _print_summary(summary)
                for r in contacts_rows or []:
                    print(f"  {r['id']:>6} {r['phone']:<16} {r['state']:<10} attempts {r['attempts']} "
                          f"last {r['last_outcome'] or '-'}")
        else:
            state = db.run_sync(lambda s: cs.change_state(s, args.id, cmd, now=now))
            summary = db.read_sync(lambda s: cs.campaign_summary(s, args.id))
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                print(f"campaign {args.id} is {state.value} (a running server applies it within its poll "
                      "interval)")
        return 0
    except (cs.CampaignError, NotFoundError, ValueError, ValidationError, OSError) as exc:
        print(f"campaign {args.campaign_cmd}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
