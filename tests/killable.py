"""A throwaway PostgreSQL cluster a test may stop or kill -9: Debian's binaries, a temp dir.

As root, initdb and postgres run as the `postgres` OS user (the server refuses root);
the postmaster is started directly (no wrapper process), so `pid` is the postmaster.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_SECONDS = 60.0


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin with initdb and postgres, if any."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists() and (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def skip_reason() -> str | None:
    """Why a killable cluster cannot be made here, or None."""
    if _bin_dir() is None:
        return "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` OS user to run the server as"
    return None


class KillableCluster:
    """initdb'd in a temp dir; trust auth; TCP on 127.0.0.1:<free port>; socket in the dir."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        assert bin_dir is not None, skip_reason()
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="killable-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._user: dict[str, object] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.process: subprocess.Popen[bytes] | None = None
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, timeout=120, **self._user)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode()[-2000:]}")

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections."""
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (kept for the process's life)
        self.process = subprocess.Popen(  # type: ignore[call-overload]
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=30",
                "-c",
                "shared_buffers=16MB",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._user,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.server_log()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                ready = subprocess.run(
                    [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                    capture_output=True,
                    timeout=10,
                )
                if ready.returncode == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start in {START_TIMEOUT_SECONDS}s")

    def server_log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_immediate(self) -> None:
        """SIGQUIT: the postmaster kills its backends at once and exits (no shutdown checkpoint)."""
        self._signal_and_wait(signal.SIGQUIT)

    def kill(self) -> None:
        """kill -9 of the postmaster and of every backend (each backend makes itself a
        process group leader, so they are found by parent pid). The postmaster is stopped
        first, so that it neither notices its children dying nor starts new ones."""
        if self.process is None or self.process.poll() is not None:
            return
        pid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            for child in _children(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def _signal_and_wait(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def killable_cluster() -> Iterator[KillableCluster]:
    """A started cluster, killed and removed afterwards; the test is skipped if none can run."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = KillableCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
