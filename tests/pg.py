"""A throwaway PostgreSQL server for tests: `pg_url` (session-wide).

Uses Debian's server binaries (/usr/lib/postgresql/<version>/bin, package `postgresql`):
initdb into a temporary folder, start on a free localhost port, create a database, and stop
and delete it all at the end. PostgreSQL refuses to run as root, so as root the cluster runs
as the `postgres` user (`runuser`). Skipped, with the reason, when the binaries or the psycopg
driver are missing. With `NAS_ATTN_TEST_PG_URL` set (e.g.
`postgresql+psycopg://user@host/db`), the tests use that server instead.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

ENV = "NAS_ATTN_TEST_PG_URL"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_url():
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg: "
                        "pip install -e \".[dev]\" (or \"psycopg[binary]\")")
    if os.environ.get(ENV):
        yield os.environ[ENV]
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip(f"no PostgreSQL server binaries (/usr/lib/postgresql/*/bin; Debian: "
                    f"apt-get install postgresql); or set {ENV} to an external server")
    bindir = Path(bins[-1]).parent
    prefix: list[str] = []
    root = tempfile.mkdtemp(prefix="nas_attn_pg_")
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = Path(root) / "data"
    port = _free_port()

    def run(*cmd):
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "optuna", "--auth=trust")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(Path(root) / "log"), "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200",
            "start")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {e.stderr.decode(errors='replace')}")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "optuna",
            "nas_attn")
        yield f"postgresql+psycopg://optuna@127.0.0.1:{port}/nas_attn"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
