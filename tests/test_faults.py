"""Faults: a server that is unreachable, stops responding, or is killed and restarted.

Every server here is a mongod that the test starts on 127.0.0.1 and stops in a
finalizer, or a loopback port that nothing listens on, or a loopback socket
that accepts connections and never replies. Tests that need a fresh
interpreter (Ctrl-C, interpreter exit, fork) run a child Python process with a
timeout, so a hang fails the test instead of stalling the run.

Durations are asserted only as bounds on how long a fault may take to surface,
with a margin for a loaded machine. Figures such as how many acknowledged
writes a kill loses are printed, not asserted. Run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pymongo import MongoClient

from execstore import (
    DatabaseError,
    DatabaseUnavailableError,
    ExecutionStoreError,
    ExecutionStoreService,
    Settings,
    SyncExecutionStoreService,
)
from execstore._server import MongodProcess, find_mongod

pytestmark = pytest.mark.mongod_only  # faults of a real server and driver

DRIVERS = ["motor", "pymongo"]
HOST = "127.0.0.1"
USER = "fault-user"
PASSWORD = "s3cret-fault-pw"
UNREACHABLE_TIMEOUT_SECONDS = 0.5
# A fault must surface within this many configured timeouts, plus a second of
# margin for process start-up and a loaded machine.
TIMEOUT_FACTOR = 3
MARGIN_SECONDS = 1.0
CHILD_TIMEOUT_SECONDS = 60.0
# How long a child may take to exit after SIGINT.
INTERRUPT_EXIT_SECONDS = 5.0
# The child's own timeout while it waits on a server that never replies: long,
# so that only Ctrl-C can end its call within INTERRUPT_EXIT_SECONDS.
SILENT_SERVER_TIMEOUT_SECONDS = 30.0
PROJECT_ROOT = Path(__file__).parents[1]


def fault_bound(timeout_seconds: float) -> float:
    """Return how long a fault may take to surface with ``timeout_seconds``."""
    return TIMEOUT_FACTOR * timeout_seconds + MARGIN_SECONDS


def free_loopback_port() -> int:
    """Return a loopback port that was free a moment ago and that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def unreachable_settings(driver: str) -> Settings:
    uri = f"mongodb://{USER}:{PASSWORD}@{HOST}:{free_loopback_port()}"
    return Settings(
        database_uri=uri, timeout_seconds=UNREACHABLE_TIMEOUT_SECONDS, driver=driver
    )


def full_error_text(error: BaseException) -> str:
    """Return the message and traceback of an error and of every error it chains."""
    return "".join(traceback.format_exception(error))


# PyMongo 4.20's asyncio connect closes its new socket on OSError and
# TimeoutError only. When a client is closed while its monitor is still
# connecting to an unreachable port, the cancelled connect leaves the socket
# to the garbage collector, which warns. The tests that close such a client
# run their own event loop, collect garbage before they end, and ignore
# exactly that warning, so that it cannot fail whichever test runs next.
ignore_unclosed_driver_socket = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket"
    ":pytest.PytestUnraisableExceptionWarning"
)


def child_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


@pytest.fixture(scope="module")
def mongod_binary() -> str:
    return find_mongod(Settings.from_env())


# Unreachable at start.


@dataclass
class Outcome:
    """What a call raised, and how long it took.

    Only the error's type and text are kept: the error itself references the
    driver's objects, and through them the socket described above.
    """

    error_type: type[BaseException] | None
    error_text: str
    seconds: float


def call_unreachable_server(driver: str, calls: int) -> list[Outcome]:
    """Call set_key ``calls`` times on one service whose server is unreachable."""

    async def call() -> list[Outcome]:
        service = ExecutionStoreService(settings=unreachable_settings(driver))
        outcomes = []
        for _ in range(calls):
            started = time.monotonic()
            try:
                await service.set_key("settings", "theme", "dark")
            except ExecutionStoreError as exc:
                error = (type(exc), full_error_text(exc))
            else:
                error = (None, "")
            outcomes.append(Outcome(*error, time.monotonic() - started))
        await service.close()
        return outcomes

    outcomes = asyncio.run(call())
    gc.collect()
    return outcomes


@ignore_unclosed_driver_socket
@pytest.mark.parametrize("driver", DRIVERS)
def test_unreachable_server_raises_unavailable(driver):
    (outcome,) = call_unreachable_server(driver, calls=1)

    assert outcome.error_type is DatabaseUnavailableError
    assert issubclass(outcome.error_type, ExecutionStoreError)
    assert outcome.seconds < fault_bound(UNREACHABLE_TIMEOUT_SECONDS)
    assert PASSWORD not in outcome.error_text
    assert f"{USER}:" not in outcome.error_text


@ignore_unclosed_driver_socket
@pytest.mark.parametrize("driver", DRIVERS)
def test_unreachable_server_second_call_raises_again(driver):
    outcomes = call_unreachable_server(driver, calls=2)

    assert outcomes[1].error_type is DatabaseUnavailableError
    assert outcomes[1].seconds < fault_bound(UNREACHABLE_TIMEOUT_SECONDS)


@ignore_unclosed_driver_socket
@pytest.mark.parametrize("driver", DRIVERS)
def test_sync_unreachable_server_raises_unavailable(driver):
    service = SyncExecutionStoreService(settings=unreachable_settings(driver))

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as raised:
        service.get_key("settings", "theme")
    elapsed = time.monotonic() - started
    service.close()
    error_text = full_error_text(raised.value)
    del raised, service
    gc.collect()

    assert elapsed < fault_bound(UNREACHABLE_TIMEOUT_SECONDS)
    assert PASSWORD not in error_text
    assert f"{USER}:" not in error_text


# A server that stops responding on an open connection.


@pytest.fixture
def own_mongod(tmp_path: Path, mongod_binary: str) -> Iterator[MongodProcess]:
    """Run a mongod for one test, then resume it if stopped and shut it down."""
    server = MongodProcess.start(mongod_binary, tmp_path / "db")
    yield server
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGCONT)
    server.stop()


def suspend_process(pid: int) -> None:
    """Send SIGSTOP and wait until Linux reports the process as stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
    stat = Path(f"/proc/{pid}/stat")
    while stat.read_text().rpartition(")")[2].split()[0] != "T":
        assert time.monotonic() < deadline, f"pid {pid} did not stop after SIGSTOP"
        time.sleep(0.01)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_stopped_server_call_fails_within_timeout(own_mongod, driver):
    timeout_seconds = UNREACHABLE_TIMEOUT_SECONDS
    settings = Settings(
        database_uri=own_mongod.uri, timeout_seconds=timeout_seconds, driver=driver
    )
    service = ExecutionStoreService(settings=settings)
    await service.set_key("settings", "theme", "dark")

    suspend_process(own_mongod.pid)  # its connections stay open
    call = asyncio.ensure_future(service.get_key("settings", "theme"))
    done, _ = await asyncio.wait([call], timeout=fault_bound(timeout_seconds))
    os.kill(own_mongod.pid, signal.SIGCONT)
    if not done:
        call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    await service.close()

    assert done, (
        f"get_key on a stopped server was still waiting after "
        f"{fault_bound(timeout_seconds):g} s with timeout_seconds={timeout_seconds:g}"
    )
    assert isinstance(call.exception(), DatabaseUnavailableError)


# Killed in the middle of a write load, then restarted.

KILL_TIMEOUT_SECONDS = 2.0
WRITERS_PER_SERVICE = 2
LOAD_BEFORE_KILL_SECONDS = 0.8
LOAD_DURING_OUTAGE_SECONDS = 0.5
TIMED_WRITES = 40


@dataclass
class WriteLog:
    """What the writers of one service saw around the kill."""

    acknowledged: dict[str, float] = field(default_factory=dict)  # key -> monotonic
    attempted: set[str] = field(default_factory=set)
    outage_errors: list[BaseException] = field(default_factory=list)
    found_after_restart: set[str] = field(default_factory=set)
    call_after_restart: BaseException | None = None
    write_seconds: list[float] = field(default_factory=list)

    def acknowledged_before(self, moment: float) -> dict[str, float]:
        return {k: t for k, t in self.acknowledged.items() if t <= moment}


@dataclass
class KillRun:
    """The outcome of one kill and restart, for a journaled and a default service."""

    driver: str
    journaled: WriteLog
    default: WriteLog
    outage_probe: BaseException | None = None
    outage_probe_seconds: float = 0.0
    killed_at: float = 0.0
    restart_seconds: float = 0.0


async def write_until(
    service: ExecutionStoreService, log: WriteLog, writer: int, stop: asyncio.Event
) -> None:
    """Write new keys one after another until ``stop``, logging each outcome."""
    seq = 0
    while not stop.is_set():
        seq += 1
        key = f"w{writer}-{seq:06d}"
        log.attempted.add(key)
        try:
            await service.set_key("load", key, seq)
        except ExecutionStoreError as exc:
            log.outage_errors.append(exc)
            await asyncio.sleep(0.1)
        else:
            log.acknowledged[key] = time.monotonic()


async def time_writes(
    journaled: ExecutionStoreService, default: ExecutionStoreService, run: KillRun
) -> None:
    """Time set_key on both services, alternating so that both see the same load."""
    for n in range(TIMED_WRITES):
        for service, log in ((journaled, run.journaled), (default, run.default)):
            started = time.perf_counter()
            await service.set_key("timing", f"t{n}", n)
            log.write_seconds.append(time.perf_counter() - started)


async def kill_during_load(
    server: MongodProcess, mongod_binary: str, driver: str
) -> tuple[KillRun, MongodProcess]:
    """Kill mongod under load from two services, restart it, and read back."""
    run = KillRun(driver, WriteLog(), WriteLog())

    def settings(query: str, database_name: str) -> Settings:
        return Settings(
            database_uri=f"{server.uri}/{query}",
            database_name=database_name,
            timeout_seconds=KILL_TIMEOUT_SECONDS,
            driver=driver,
        )

    journaled = ExecutionStoreService(settings=settings("?journal=true", "journaled"))
    default = ExecutionStoreService(settings=settings("", "default"))
    await time_writes(journaled, default, run)

    stop = asyncio.Event()
    writers = [
        asyncio.create_task(write_until(service, log, n, stop))
        for service, log in ((journaled, run.journaled), (default, run.default))
        for n in range(WRITERS_PER_SERVICE)
    ]
    await asyncio.sleep(LOAD_BEFORE_KILL_SECONDS)
    await asyncio.to_thread(server.kill)
    run.killed_at = time.monotonic()
    await asyncio.sleep(LOAD_DURING_OUTAGE_SECONDS)

    started = time.monotonic()
    try:
        await default.get_key("load", "w0-000001")
    except BaseException as exc:
        run.outage_probe = exc
    run.outage_probe_seconds = time.monotonic() - started
    stop.set()
    await asyncio.gather(*writers)

    started = time.monotonic()
    restarted = await asyncio.to_thread(
        MongodProcess.start, mongod_binary, server.dbpath, server.port
    )
    run.restart_seconds = time.monotonic() - started
    for service, log in ((journaled, run.journaled), (default, run.default)):
        try:
            await service.set_key("after-restart", "k", 1)
            log.found_after_restart = set(await service.list_keys("load"))
        except BaseException as exc:
            log.call_after_restart = exc
        await service.close()
    return run, restarted


def print_kill_figures(run: KillRun) -> None:
    for name, log in (("journaled", run.journaled), ("default", run.default)):
        acknowledged = log.acknowledged_before(run.killed_at)
        lost = sorted(set(acknowledged) - log.found_after_restart)
        median_ms = statistics.median(log.write_seconds) * 1000
        line = (
            f"\nkill[{run.driver}] {name}: set_key median {median_ms:.2f} ms; "
            f"acknowledged before kill {len(acknowledged)}, found after restart "
            f"{len(set(acknowledged) & log.found_after_restart)}, lost {len(lost)}; "
            f"errors during outage {len(log.outage_errors)} "
            f"{sorted({type(e).__name__ for e in log.outage_errors})}"
        )
        if lost:
            last = max(acknowledged.values())
            window_ms = (last - min(acknowledged[k] for k in lost)) * 1000
            line += f"; lost writes acknowledged within {window_ms:.0f} ms of the last"
        print(line)
    print(
        f"kill[{run.driver}]: outage probe {type(run.outage_probe).__name__} after "
        f"{run.outage_probe_seconds:.2f} s; restart took {run.restart_seconds:.2f} s"
    )


@pytest.fixture(scope="module", params=DRIVERS)
def kill_run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    mongod_binary: str,
) -> Iterator[KillRun]:
    """Run one kill and restart per driver, shared by the tests that check it."""
    dbpath = tmp_path_factory.mktemp(f"kill-{request.param}") / "db"
    servers = [MongodProcess.start(mongod_binary, dbpath)]
    try:
        run, restarted = asyncio.run(
            kill_during_load(servers[0], mongod_binary, request.param)
        )
        servers.append(restarted)
        print_kill_figures(run)
        yield run
    finally:
        for server in servers:
            server.stop()


def test_outage_calls_raise_unavailable(kill_run):
    errors = kill_run.journaled.outage_errors + kill_run.default.outage_errors

    assert errors, "no call failed while the server was down"
    assert [e for e in errors if not isinstance(e, DatabaseUnavailableError)] == []
    assert isinstance(kill_run.outage_probe, DatabaseUnavailableError)
    assert kill_run.outage_probe_seconds < fault_bound(KILL_TIMEOUT_SECONDS)


def test_outage_error_names_the_fault(kill_run):
    message = str(kill_run.outage_probe)

    assert "could not be reached" in message
    assert "server start" in message  # the next step for the embedded server


def test_same_service_works_after_restart(kill_run):
    assert kill_run.journaled.call_after_restart is None
    assert kill_run.default.call_after_restart is None


def test_journaled_writes_survive_kill(kill_run):
    acknowledged = kill_run.journaled.acknowledged_before(kill_run.killed_at)

    lost = set(acknowledged) - kill_run.journaled.found_after_restart

    assert acknowledged
    assert sorted(lost) == []


def test_restart_shows_only_attempted_writes(kill_run):
    for log in (kill_run.journaled, kill_run.default):
        assert log.found_after_restart <= log.attempted


# Ctrl-C, interpreter exit and fork, each in a child interpreter.

CANCEL_RECORDING_CHILD = """
    import asyncio
    import sys

    from execstore import MongoExecutionStoreRepo, Settings, SyncExecutionStoreService

    original_find_key = MongoExecutionStoreRepo.find_key

    async def find_key_recording_cancel(self, *args):
        try:
            return await original_find_key(self, *args)
        except asyncio.CancelledError:
            print("find_key cancelled", flush=True)
            raise

    MongoExecutionStoreRepo.find_key = find_key_recording_cancel

    port, driver, timeout_seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    settings = Settings(
        database_uri=f"mongodb://127.0.0.1:{port}",
        timeout_seconds=timeout_seconds,
        driver=driver,
    )
    service = SyncExecutionStoreService(settings=settings)
    print("calling", flush=True)
    service.get_key("settings", "theme")
    print("returned", flush=True)
"""


@dataclass
class InterruptedChild:
    """What a child printed and how it ended after SIGINT."""

    stdout: str
    stderr: str
    exited_in_time: bool
    returncode: int | None


def interrupt_blocked_child(tmp_path: Path, driver: str) -> InterruptedChild:
    """Block a child on a silent server, send it SIGINT, and wait for its exit."""
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(CANCEL_RECORDING_CHILD))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((HOST, 0))
        listener.listen()
        listener.settimeout(CHILD_TIMEOUT_SECONDS)
        port = listener.getsockname()[1]
        argv = [sys.executable, str(script), str(port), driver]
        child = subprocess.Popen(
            [*argv, str(SILENT_SERVER_TIMEOUT_SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_environment(),
        )
        try:
            connection, _ = listener.accept()  # the driver is waiting for a reply
            with connection:
                time.sleep(0.3)
                child.send_signal(signal.SIGINT)
                try:
                    stdout, stderr = child.communicate(timeout=INTERRUPT_EXIT_SECONDS)
                    exited_in_time = True
                except subprocess.TimeoutExpired:
                    child.kill()
                    stdout, stderr = child.communicate()
                    exited_in_time = False
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    return InterruptedChild(stdout, stderr, exited_in_time, child.returncode)


@pytest.fixture(scope="module")
def interrupted_children(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, InterruptedChild]:
    """Interrupt one blocked child per driver, shared by the Ctrl-C tests."""
    return {
        driver: interrupt_blocked_child(tmp_path_factory.mktemp(driver), driver)
        for driver in DRIVERS
    }


@pytest.mark.parametrize("driver", DRIVERS)
def test_sigint_raises_keyboard_interrupt(interrupted_children, driver):
    child = interrupted_children[driver]

    assert "KeyboardInterrupt" in child.stderr
    assert "returned" not in child.stdout


@pytest.mark.parametrize("driver", DRIVERS)
def test_sigint_cancels_the_coroutine(interrupted_children, driver):
    child = interrupted_children[driver]

    assert "find_key cancelled" in child.stdout


@pytest.mark.parametrize("driver", DRIVERS)
def test_sigint_exits_interpreter_promptly(interrupted_children, driver):
    child = interrupted_children[driver]

    assert child.exited_in_time, (
        f"the child raised KeyboardInterrupt but was still running "
        f"{INTERRUPT_EXIT_SECONDS:g} s after SIGINT. Its stderr:\n"
        f"{child.stderr[-2000:]}"
    )


PLAIN_SCRIPT_CHILD = """
    import sys

    from execstore import Settings, SyncExecutionStoreService

    uri, database_name, driver, close = sys.argv[1:5]
    settings = Settings(database_uri=uri, database_name=database_name, driver=driver)
    service = SyncExecutionStoreService(settings=settings)
    service.set_key("settings", "theme", "dark")
    print(service.get_key("settings", "theme").value)
    if close == "close":
        service.close()
"""


@pytest.mark.parametrize("close", ["close", "no-close"])
@pytest.mark.parametrize("driver", DRIVERS)
def test_interpreter_exits_after_sync_calls(
    mongod, database_name, tmp_path, driver, close
):
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(PLAIN_SCRIPT_CHILD))

    finished = subprocess.run(
        [sys.executable, str(script), mongod.uri, database_name, driver, close],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        env=child_environment(),
    )

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "dark\n"
    if close == "close":
        assert finished.stderr == ""


FORK_CHILD = """
    import json
    import os
    import select
    import sys
    import threading

    from execstore import Settings, SyncExecutionStoreService

    uri, database_name, driver, report_seconds = sys.argv[1:5]
    settings = Settings(database_uri=uri, database_name=database_name, driver=driver)
    service = SyncExecutionStoreService(settings=settings)
    service.set_key("settings", "parent", "p")

    # Another thread keeps calling, so the fork may land in the middle of a call.
    stop = threading.Event()
    first_call_done = threading.Event()

    def call_until_stopped():
        while not stop.is_set():
            service.get_key("settings", "parent")
            first_call_done.set()

    caller = threading.Thread(target=call_until_stopped)
    caller.start()
    first_call_done.wait(30)

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            service.set_key("settings", "child", "c")
            report = {
                "parent": service.get_key("settings", "parent").value,
                "child": service.get_key("settings", "child").value,
            }
            service.close()
        except BaseException as exc:
            report = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)

    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], float(report_seconds))
    stop.set()
    caller.join()
    if ready:
        print(os.read(read_end, 65536).decode())
        os.waitpid(pid, 0)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print(json.dumps({"error": "the forked child sent no report in time"}))
    print(service.get_key("settings", "child").value)
    service.close()
"""


@pytest.mark.parametrize("driver", DRIVERS)
def test_forked_child_uses_parent_wrapper(mongod, database_name, tmp_path, driver):
    script = tmp_path / "fork.py"
    script.write_text(textwrap.dedent(FORK_CHILD))
    report_seconds = CHILD_TIMEOUT_SECONDS / 3

    argv = [sys.executable, str(script), mongod.uri, database_name, driver]

    finished = subprocess.run(
        [*argv, str(report_seconds)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        env=child_environment(),
    )

    assert finished.returncode == 0, finished.stderr
    report_line, parent_line = finished.stdout.splitlines()
    assert json.loads(report_line) == {"parent": "p", "child": "c"}
    assert parent_line == "c"


# Credentials that the server rejects.


@pytest.fixture(scope="module")
def server_with_user(
    tmp_path_factory: pytest.TempPathFactory, mongod_binary: str
) -> Iterator[MongodProcess]:
    """Run a mongod with one user and, as the embedded one, no access control."""
    server = MongodProcess.start(mongod_binary, tmp_path_factory.mktemp("auth") / "db")
    try:
        with MongoClient(server.uri) as client:
            client.admin.command("createUser", USER, pwd=PASSWORD, roles=["root"])
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("driver", DRIVERS)
async def test_wrong_password_raises_database_error(server_with_user, driver):
    uri = f"mongodb://{USER}:wrong-{PASSWORD}@{HOST}:{server_with_user.port}"
    settings = Settings(database_uri=uri, timeout_seconds=2.0, driver=driver)
    service = ExecutionStoreService(settings=settings)

    with pytest.raises(DatabaseError) as raised:
        await service.set_key("settings", "theme", "dark")
    await service.close()

    assert PASSWORD not in full_error_text(raised.value)
    assert "authentication" in str(raised.value).lower()
