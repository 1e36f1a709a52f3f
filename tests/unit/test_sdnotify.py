"""systemd's notify protocol against a real datagram socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from reminderd.sdnotify import notify, watchdog_interval_s


def test_sends_the_state_to_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        assert notify("READY=1\nSTATUS=delivering", {"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1\nSTATUS=delivering"


def test_abstract_namespace_socket() -> None:
    name = f"reminderd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_nothing_is_sent() -> None:
    assert notify("READY=1", {}) is False


def test_a_socket_nobody_listens_on_is_not_an_error(tmp_path: Path) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_watchdog_interval_is_half_of_watchdog_sec() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0


def test_watchdog_meant_for_another_process_or_absent_is_ignored() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
