"""Running a stack's processes on this machine, for `astronote up`/`demo` and the end-to-end
tests: free ports, waiting until a process answers, and child processes that each lead their
own session (one signal reaches a process and its children, e.g. gunicorn's workers, and a
Ctrl-C in the terminal reaches none of them) with their output in a log file.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # Like gunicorn: a port with only TIME_WAIT leftovers counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports to listen on are taken below Linux's ephemeral range (32768-60999 by default): a port
# the kernel handed out as free (bind to 0) is one it also hands to outgoing connections, and
# one took a test's gunicorn port between the check and gunicorn's bind ("Address already in
# use", a CI run).
LISTEN_PORTS = range(20000, 32768)
_ports = random.Random()


def _ephemeral() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def free_port() -> int:
    """A port nobody listens on, outside the range of outgoing connections' ports when one is
    free there (else any the kernel gives)."""
    ephemeral = _ephemeral()
    for _ in range(50):
        port = _ports.choice(LISTEN_PORTS)
        if port not in ephemeral and port_is_free(port):
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def choose_port(preferred: int, taken: tuple[int, ...] = ()) -> int:
    """`preferred` if nobody listens on it, else any free port."""
    if preferred not in taken and port_is_free(preferred):
        return preferred
    port = free_port()
    while port in taken:
        port = free_port()
    return port


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.1,
    watch: Callable[[], None] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy and return that; raise TimeoutError
    naming `what` after `timeout`. `watch` runs before each try and may raise to give up
    early (a process that the check waits for has died)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if watch is not None:
            watch()
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # noqa: BLE001 - keep polling, report the last one
            last_error = error
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what}"
        + (f" (last error: {last_error!r})" if last_error else "")
    )


def signal_group(pid: int, sig: int) -> None:
    """`sig` to the session led by `pid`; nothing when it is gone already."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class ProcessGroup:
    """Labelled child processes; `<log_dir>/<prefix><label>.log` holds each one's output. With
    `echo` (a terminal), each line is also written there as `label | line`, as a Procfile
    runner shows it (`astronote up`)."""

    def __init__(
        self,
        log_dir: Path,
        prefix: str = "",
        cwd: Path | None = None,
        echo: TextIO | None = None,
    ) -> None:
        self.log_dir, self.prefix, self.cwd, self.echo = log_dir, prefix, cwd, echo
        self.processes: dict[str, subprocess.Popen] = {}
        self._copiers: list[threading.Thread] = []
        self._echo_lock = threading.Lock()

    def log_path(self, label: str) -> Path:
        return self.log_dir / f"{self.prefix}{label}.log"

    def start(self, label: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
        """Start `argv` as `label` (a label started again gets a fresh log)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(label), "wb") as log:
            process = subprocess.Popen(
                list(argv),
                cwd=self.cwd,
                env=dict(env),
                stdout=log if self.echo is None else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.echo is not None:
            copier = threading.Thread(
                target=self._copy, args=(label, process), name=f"echo-{label}", daemon=True
            )
            copier.start()
            self._copiers.append(copier)
        self.processes[label] = process
        return process

    def _copy(self, label: str, process: subprocess.Popen) -> None:
        """Each line of `label`'s output to its log file and, prefixed, to `echo`."""
        assert process.stdout is not None and self.echo is not None
        width = max(6, len(label))
        with open(self.log_path(label), "ab") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                text = line.decode("utf-8", "replace").rstrip("\n")
                with self._echo_lock:
                    self.echo.write(f"{label:<{width}} | {text}\n")
                    self.echo.flush()

    def exited(self) -> tuple[str, int] | None:
        """The first process that is no longer running, with its exit status."""
        for label, process in self.processes.items():
            if process.poll() is not None:
                return label, process.returncode
        return None

    def kill(self, label: str, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """`sig` to `label` and its children; wait until it has exited."""
        process = self.processes[label]
        signal_group(process.pid, sig)
        process.wait(timeout=timeout)

    def stop_all(self, grace: float = 10) -> None:
        """SIGTERM to every running process, SIGKILL to those still running `grace` seconds
        later; the group is empty afterwards."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        for copier in self._copiers:  # the last lines of each output, before returning
            copier.join(timeout=5)
        self._copiers.clear()
        self.processes.clear()
