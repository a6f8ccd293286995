"""The demo's ways out (`keeperd.demo.main`), in order: a terminal's Ctrl-C signals the whole
process group, the demo's anvil with it, so the demo's cleanup may find the devnet gone."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

import keeperd.demo as demo


def run_main(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: Any) -> int:
    monkeypatch.setattr(demo, "_run_demo", body)
    monkeypatch.setattr("sys.argv", ["keeperd-demo", "--log", str(tmp_path / "demo.log")])
    return demo.main()


def test_a_ctrl_c_whose_cleanup_finds_the_devnet_gone_is_an_interruption(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """(A by-hand trial: the devnet gone with the Ctrl-C, restoring its automine raised
    ConnectionRefusedError in place of the interruption, and the demo ended in
    `process.uncaught_exception` and make's Error 1.) The order made certain here: the
    interruption, then the cleanup's call to a devnet that is gone."""
    async def crash_then_ctrl_c(*_: Any) -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)  # (asyncio.run's handler: the task cancelled)
            await asyncio.sleep(5)
        finally:
            raise ConnectionRefusedError(111, "Connection refused")

    assert run_main(monkeypatch, tmp_path, crash_then_ctrl_c) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # (put back)


def test_a_devnet_gone_without_a_ctrl_c_is_said_in_a_line_with_the_log(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Not interrupted, the same error is the demo's failure: one line naming it and where
    its traceback is (the crash hook's was withheld: the log file closed by then)."""
    async def devnet_gone(*_: Any) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    assert run_main(monkeypatch, tmp_path, devnet_gone) == 1
    err = capsys.readouterr().err
    assert err.startswith("keeperd demo: stopped by ConnectionRefusedError: [Errno 111] "
                          "Connection refused (did the devnet's anvil stop?")
    assert "ConnectionRefusedError" in (tmp_path / "demo.log").read_text()
