"""Schema migrations (alembic) run from code at server start.

Other packages add their tables by registering their MetaData (for autogenerate) and a folder of alembic
revisions (a branch with its own ``branch_labels``) *before* ``upgrade_database`` runs::

    from crm_bridge import migrate
    migrate.register_metadata(voiceauth.models.Base.metadata)
    migrate.register_version_location(Path(voiceauth.__file__).parent / "migrations")

``upgrade_database`` then upgrades every head (``heads``), so each package's branch is applied. The CRM's own
model modules beyond ``models`` (surveys, campaigns) are imported here, so that whoever assembles the metadata
(alembic's env, autogenerate, the schema test) sees every table the migrations create.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData

from . import campaign_models, survey_models  # noqa: F401  (their tables join Base.metadata)
from .db import make_engine, normalize_url
from .models import Base

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_extra_metadata: list[MetaData] = []
_extra_locations: list[Path] = []


def register_metadata(metadata: MetaData) -> None:
    if metadata is not Base.metadata and metadata not in _extra_metadata:
        _extra_metadata.append(metadata)


def register_version_location(path: Path) -> None:
    path = Path(path).resolve()
    if path not in _extra_locations:
        _extra_locations.append(path)


def all_metadata() -> list[MetaData]:
    return [Base.metadata, *_extra_metadata]


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    locations = [MIGRATIONS_DIR / "versions", *_extra_locations]
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", __import__("os").pathsep.join(str(p) for p in locations))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade_database(url: str | None = None, *, engine: Engine | None = None, revision: str = "heads") -> None:
    """Bring the database at ``url`` (or behind ``engine``) to the latest schema; safe to call at every start."""
    if engine is None and url is None:
        raise ValueError("upgrade_database needs a URL or an engine")
    own = engine is None
    eng = engine if engine is not None else make_engine(url or "")
    cfg = alembic_config(eng.url.render_as_string(hide_password=False))
    try:
        with eng.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if own:
            eng.dispose()
    log.info("database schema at %s", revision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm_bridge.migrate", description="Manage the CRM schema")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upgrade", help="upgrade the database to the latest schema")
    up.add_argument("url")
    rev = sub.add_parser("revision", help="autogenerate a new revision against URL (developers)")
    rev.add_argument("url")
    rev.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "upgrade":
        upgrade_database(args.url)
    else:
        command.revision(alembic_config(args.url), message=args.message, autogenerate=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
