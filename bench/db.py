"""The benchmark's databases: dropped and created afresh, reached through a maintenance database."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


def conninfo(settings_dict: dict[str, Any], name: str | None = None) -> str:
    """A libpq connection string for Django's database settings (another database by ``name``)."""
    parts = {
        "dbname": name or settings_dict["NAME"],
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
        "host": settings_dict.get("HOST") or None,
        "port": str(settings_dict["PORT"]) if settings_dict.get("PORT") else None,
    }
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in parts.items() if v is not None})


def maintenance(settings_dict: dict[str, Any]) -> psycopg.Connection[Any]:
    """An autocommit connection to the server's ``postgres`` database."""
    return psycopg.connect(conninfo(settings_dict, "postgres"), autocommit=True)


def recreate(settings_dict: dict[str, Any], name: str) -> None:
    """Drop ``name`` (closing its sessions) and create it empty."""
    with maintenance(settings_dict) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop(settings_dict: dict[str, Any], name: str) -> None:
    with maintenance(settings_dict) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def xact_commit(settings_dict: dict[str, Any], name: str) -> int:
    """Transactions committed in database ``name`` (pg_stat_database), read from outside it."""
    with maintenance(settings_dict) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", [name]
        ).fetchone()
    return int(row[0]) if row else 0


def server_version(settings_dict: dict[str, Any]) -> str:
    with maintenance(settings_dict) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def conninfo_url(settings_dict: dict[str, Any], name: str) -> str:
    """A ``postgresql://`` URL for database ``name`` (for tools that take URLs, like DBOS)."""
    from urllib.parse import quote

    user = quote(settings_dict.get("USER") or "", safe="")
    if settings_dict.get("PASSWORD"):
        user += ":" + quote(settings_dict["PASSWORD"], safe="")
    auth = f"{user}@" if user else ""
    host = settings_dict.get("HOST") or "localhost"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgresql://{auth}{host}{port}/{quote(name, safe='')}"
