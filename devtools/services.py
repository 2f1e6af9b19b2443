"""Real local services for development and tests: a PostgreSQL server, the moto AWS emulator and
a Redis server (the Celery broker of `EXECUTOR=celery make up`).

Nothing here is assumed to be running. Each server is started from binaries on this machine
(PostgreSQL's under /usr/lib/postgresql/<v>/bin, or the `pgserver` wheel where those are absent;
Debian's `redis-server`, installed with apt-get when missing and we are root) on loopback, and
stopped again by whoever started it. Used by `make up` (devstack) and by the pytest fixtures,
which start them on free ports.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PG_SUPERUSER = "postgres"
REPO = Path(__file__).resolve().parents[1]


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stable_free_port(low: int = 20000, high: int = 32000) -> int:
    """A free loopback port below Linux's ephemeral range (32768+), so no outgoing connection of
    another process can take it between now and the moment a stack started later binds it."""
    for _ in range(200):
        port = random.randint(low, high)  # noqa: S311 - not for security
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_free_port(port: int, what: str, env_var: str) -> None:
    if port_in_use(port):
        raise ServiceError(
            f"port {port} for {what} is already in use on 127.0.0.1; stop whatever holds it "
            f"or choose another port with {env_var}=<port>"
        )


def stop_child(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """Terminate a child server this process started, killing it if it outlives `timeout`."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")


# --------------------------------------------------------------------------- PostgreSQL


def find_pg_bindir() -> Path:
    """Locate PostgreSQL server binaries: $PG_BINDIR, Debian's, PATH, then the pgserver wheel."""
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    with contextlib.suppress(ImportError):
        import pgserver  # type: ignore[import-not-found]

        candidates.append(str(Path(pgserver.__file__).parent / "pginstall" / "bin"))
    for cand in candidates:
        if (Path(cand) / "postgres").exists() and (Path(cand) / "initdb").exists():
            return Path(cand)
    raise ServiceError(
        "no PostgreSQL server binaries found (looked in $PG_BINDIR, /usr/lib/postgresql/*/bin, "
        "PATH and the pgserver package); install postgresql-15 or `pip install pgserver`"
    )


def _service_user() -> str | None:
    """PostgreSQL refuses to run as root; when we are root, run it as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "drillpg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "--system", "--no-create-home", "drillpg"], check=True)
    return "drillpg"


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--", *cmd]


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in `datadir`, listening on 127.0.0.1:`port` (TCP only)."""

    datadir: Path
    port: int
    password: str = "postgres"  # noqa: S105 - local, loopback-only development cluster
    bindir: Path = field(default_factory=find_pg_bindir)

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).resolve()
        self.user = _service_user()
        self.logfile = self.datadir.parent / f"{self.datadir.name}.log"

    def uri(self, dbname: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{PG_SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def _chown(self, path: Path) -> None:
        if self.user:
            shutil.chown(path, self.user, self.user)

    def initdb(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._chown(self.datadir)
        pwfile = self.datadir.parent / f".{self.datadir.name}.pw"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        try:
            cmd = [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                PG_SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
            proc = subprocess.run(_as_user(cmd, self.user), capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ServiceError(f"initdb failed: {proc.stderr.strip() or proc.stdout.strip()}")
        finally:
            pwfile.unlink(missing_ok=True)

    def is_running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists() and port_in_use(self.port)

    def start(self, extra_settings: dict[str, str] | None = None) -> None:
        if extra_settings is not None:
            self.extra_settings = extra_settings  # kept for restart()
        self.initdb()
        if self.is_running():
            return
        require_free_port(self.port, "PostgreSQL", "DRILL_PG_PORT")
        self.logfile.touch()
        self._chown(self.logfile)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "fsync": os.environ.get("DRILL_PG_FSYNC", "on"),
            **(getattr(self, "extra_settings", None) or {}),
        }
        opts = " ".join(f"-c {k}={v}" if v else f"-c {k}=''" for k, v in settings.items())
        cmd = [
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        ]
        proc = subprocess.run(_as_user(cmd, self.user), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise ServiceError(f"PostgreSQL did not start: {proc.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]
        subprocess.run(_as_user(cmd, self.user), capture_output=True, text=True, check=False)

    def restart(self) -> None:
        """Stop immediately (like a crash) and start again; used by fault-injection tests."""
        self.stop(mode="immediate")
        self.start()

    def create_database(
        self, name: str, owner_password: str | None = None, template: str | None = None, owner: str | None = None
    ) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.uri(), autocommit=True) as conn:
            if owner and owner_password is not None:
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
                if not exists:
                    conn.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                            sql.Identifier(owner), sql.Literal(owner_password)
                        )
                    )
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            if owner:
                stmt += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
            conn.execute(stmt)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --------------------------------------------------------------------------- moto (AWS emulator)


@dataclass
class MotoServer:
    """The moto AWS emulator (`moto[server]`), speaking the AWS wire protocol on 127.0.0.1:`port`,
    started through devtools.moto_server (thread-safe Kinesis shards)."""

    port: int
    logfile: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):  # noqa: S310
                return True
        except OSError:
            return False

    def start(self) -> None:
        if self.process and self.process.poll() is None:
            return
        require_free_port(self.port, "the AWS emulator (moto)", "DRILL_AWS_PORT")
        out = open(self.logfile, "ab") if self.logfile else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,  # devtools is importable from the repository's root
        )
        wait_for(self.healthy, 60, f"moto server on port {self.port}")

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")  # noqa: S310
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - loopback emulator
            pass

    def stop(self) -> None:
        stop_child(self.process)
        self.process = None


def boto3_client(service: str, endpoint_url: str):
    """A boto3 client of the emulator, with its dummy credentials (never the caller's environment)
    and retries configured like `connections.aws_client` (adaptive, 10 attempts)."""
    import boto3
    from botocore.config import Config

    retry = Config(retries={"max_attempts": 10, "mode": "adaptive"}, connect_timeout=5, read_timeout=30)
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        config=retry,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - the emulator accepts any credentials
    )


# --------------------------------------------------------------------------- Redis (Celery broker)

REDIS_PACKAGE = "redis-server"  # Debian's package


def find_redis_server(install: bool = False) -> Path:
    """Locate `redis-server`: $REDIS_SERVER, PATH, /usr/bin. With `install`, when it is missing and we
    are root on a machine with apt-get, install Debian's package first (as .ci/run does)."""
    for cand in (os.environ.get("REDIS_SERVER"), shutil.which("redis-server"), "/usr/bin/redis-server"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"redis-server not found: installing Debian's {REDIS_PACKAGE} package (apt-get)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", REDIS_PACKAGE],
        ):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ServiceError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")
        return find_redis_server(install=False)
    raise ServiceError(
        "no redis-server found (looked at $REDIS_SERVER, PATH and /usr/bin); the Celery stack needs "
        f"Redis: `apt-get install --no-install-recommends {REDIS_PACKAGE}` (as root), or set REDIS_SERVER"
    )


def redis_ping(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING on host:port (the wire protocol, no client library)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One Redis server on 127.0.0.1:`port`, in memory only (no RDB snapshots, no AOF): the Celery
    broker holds queued task messages, which the scheduler re-queues if they are lost."""

    port: int
    datadir: Path
    logfile: Path | None = None
    binary: Path | None = None
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).resolve()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The command line: loopback only, protected mode, foreground, nothing written to disk."""
        binary = self.binary or find_redis_server()
        cmd = [str(binary), "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
        cmd += ["--daemonize", "no", "--save", "", "--appendonly", "no", "--dir", str(self.datadir)]
        if self.logfile:
            cmd += ["--logfile", str(self.logfile)]
        return cmd

    def healthy(self) -> bool:
        return redis_ping(self.port)

    def start(self) -> None:
        if self.process and self.process.poll() is None:
            return
        require_free_port(self.port, "Redis", "DRILL_REDIS_PORT")
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self.healthy, 30, f"redis-server on port {self.port}")

    def stop(self) -> None:
        stop_child(self.process)
        self.process = None
