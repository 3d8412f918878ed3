"""``contact-server campaign ...`` on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from crm_bridge.security import fast_hasher
from crm_bridge.seed import seed_demo
from ivr.cli import main


def test_create_from_csv_with_rules_then_status_pause_resume_stop(db, db_url, tmp_path, capsys):
    db.run_sync(lambda s: seed_demo(s, hasher=fast_hasher()))
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("phone\n+39 347 100 0001\n+390212345678\nbad\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("retries:\n  busy: {max_attempts: 4, delay_seconds: 60}\n")
    rc = main(["campaign", "--db", db_url, "--json", "create", "--name", "cli", "--survey", "csat", "--csv",
               str(csv_path), "--rules", str(rules), "--timezone", "Europe/London", "--hours", "mon-fri=10:00-12:00",
               "--hours", "mon-fri=14:00-16:00", "--per-minute", "3", "--retry", "no_answer=2:600"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["state"] == "draft" and out["import"]["added"] == 2 and out["import"]["failed"] == 1
    r = out["rules"]
    assert r["window"] == {"timezone": "Europe/London", "hours": {"mon-fri": ["10:00-12:00", "14:00-16:00"]},
                           "holidays": []}
    assert r["pacing"]["calls_per_minute"] == 3
    assert r["retries"]["busy"] == {"max_attempts": 4, "delay_seconds": 60.0}
    assert r["retries"]["no_answer"] == {"max_attempts": 2, "delay_seconds": 600.0}
    cid = str(out["id"])
    assert main(["campaign", "--db", db_url, "resume", cid]) == 0
    assert "running" in capsys.readouterr().out
    assert main(["campaign", "--db", db_url, "pause", cid]) == 0
    assert main(["campaign", "--db", db_url, "status", cid, "--contacts"]) == 0
    text = capsys.readouterr().out
    assert "[paused]" in text and "+393471000001" in text
    assert main(["campaign", "--db", db_url, "stop", cid]) == 0
    assert main(["campaign", "--db", db_url, "resume", cid]) == 1
    assert "cannot resume" in capsys.readouterr().err
    assert main(["campaign", "--db", db_url, "list"]) == 0
    assert "[stopped]" in capsys.readouterr().out


def test_query_source_and_clear_errors(db, db_url, capsys):
    db.run_sync(lambda s: seed_demo(s, hasher=fast_hasher()))
    assert main(["campaign", "--db", db_url, "create", "--name", "biz", "--survey", "csat",
                 "--segment", "business", "--start"]) == 0
    assert "[running]" in capsys.readouterr().out
    assert main(["campaign", "--db", db_url, "create", "--name", "x", "--survey", "csat", "--segment", "retail",
                 "--hours", "mon-fri 09:00"]) == 1
    assert "DAYS=HH:MM-HH:MM" in capsys.readouterr().err
    assert main(["campaign", "--db", db_url, "status", "999"]) == 1
