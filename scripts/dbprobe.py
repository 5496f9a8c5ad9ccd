#!/usr/bin/env python3
"""Tell whether a database or broker answers, within a few seconds.

    python scripts/dbprobe.py URL [--timeout SECONDS]
    python scripts/dbprobe.py URL --drop-test-db NAME

URL is a postgres://, mysql:// (or mariadb://), redis:// or sqlite:// URL, as
in DATABASE_URL. Exit status 0 and "ok <server version>" on stdout when the
server answers; exit status 1 and one line saying why on stdout when it does
not (refused, timed out, driver missing, bad credentials, ...).

Only the server is probed, not the database named in the URL: the test suite
creates its own test database, so `gestore` itself need not exist. PostgreSQL
is probed through its maintenance database `postgres`, MySQL/MariaDB without
selecting a database.

--drop-test-db NAME drops the database NAME (which must start with "test_")
if it exists: `make test` uses it to clean up after a run it had to kill.
"""
import argparse
import socket
import sys
from urllib.parse import unquote, urlsplit


class ProbeError(Exception):
    """The server did not answer; the message says why."""


def _one_line(exc):
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def probe_postgres(parts, timeout):
    try:
        import psycopg
    except ImportError as exc:
        raise ProbeError(f"driver psycopg not installed ({exc})") from None
    try:
        with psycopg.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or "") or None,
            dbname="postgres",
            connect_timeout=max(1, int(timeout)),
        ) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:  # noqa: BLE001  (any failure means "does not answer")
        raise ProbeError(_one_line(exc)) from None
    return f"PostgreSQL {version}"


def probe_mysql(parts, timeout):
    try:
        import pymysql
    except ImportError as exc:
        raise ProbeError(f"driver PyMySQL not installed ({exc})") from None
    try:
        conn = pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT VERSION()")
                version = cursor.fetchone()[0]
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001
        raise ProbeError(_one_line(exc)) from None
    return f"MySQL/MariaDB {version}"


def probe_redis(parts, timeout):
    """PING over a plain socket, so the probe needs no redis package."""
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if parts.password:
                user = unquote(parts.username or "default")
                pw = unquote(parts.password)
                sock.sendall(_resp("AUTH", user, pw))
                reply = sock.recv(512)
                if not reply.startswith(b"+OK"):
                    raise ProbeError(f"AUTH refused: {reply.decode(errors='replace').strip()}")
            sock.sendall(_resp("PING"))
            reply = sock.recv(512)
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ProbeError(_one_line(exc)) from None
    if not reply.startswith(b"+PONG"):
        raise ProbeError(f"unexpected reply to PING: {reply[:80]!r}")
    return "Redis PONG"


def _resp(*words):
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


PROBES = {
    "postgres": probe_postgres,
    "postgresql": probe_postgres,
    "pgsql": probe_postgres,
    "mysql": probe_mysql,
    "mariadb": probe_mysql,
    "redis": probe_redis,
}


def probe(url, timeout=3.0):
    """Return a short description of the server at `url`; raise ProbeError if it does not answer."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme in ("sqlite", "sqlite3"):
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version} (built in)"
    if scheme not in PROBES:
        raise ProbeError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    return PROBES[scheme](parts, timeout)


def drop_test_db(url, name, timeout=3.0):
    """Drop the test database `name` on the server at `url`, if it exists."""
    if not name.startswith("test_") or not name.replace("_", "").replace("-", "").isalnum():
        raise ProbeError(f"refusing to drop {name!r}: only test_* databases")
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    try:
        if PROBES.get(scheme) is probe_postgres:
            import psycopg

            with psycopg.connect(
                host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                user=unquote(parts.username or "postgres"), password=unquote(parts.password or "") or None,
                dbname="postgres", connect_timeout=max(1, int(timeout)), autocommit=True,
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        elif PROBES.get(scheme) is probe_mysql:
            import pymysql

            conn = pymysql.connect(
                host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                user=unquote(parts.username or "root"), password=unquote(parts.password or ""),
                connect_timeout=timeout,
            )
            try:
                with conn.cursor() as cursor:
                    cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            finally:
                conn.close()
        else:
            return f"nothing to drop for {parts.scheme}"
    except Exception as exc:  # noqa: BLE001
        raise ProbeError(_one_line(exc)) from None
    return f"dropped {name} if it existed"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="postgres://, mysql://, redis:// or sqlite:// URL")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    parser.add_argument("--drop-test-db", metavar="NAME", help="drop this test_* database instead of probing")
    args = parser.parse_args(argv)
    try:
        if args.drop_test_db:
            print(drop_test_db(args.url, args.drop_test_db, args.timeout))
        else:
            print("ok", probe(args.url, args.timeout))
    except ProbeError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
