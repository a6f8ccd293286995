"""Nothing passes unnoticed (#30 item 3): a test during which anvil dies fails, with the end
of anvil's log, instead of the next test quietly getting a restarted devnet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]

INNER = '''
def test_whose_anvil_dies(devnet):
    devnet.anvil.process.kill()
    devnet.anvil.process.wait()


def test_after_it(devnet):
    assert devnet.client.block_number() > 0
'''


def test_a_test_whose_anvil_dies_fails_with_its_log(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_inner=INNER)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    result = pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider",
                                           "--rootdir", str(pytester.path), "-q")
    out = result.stdout.str()
    assert "anvil exited during this test; the end of its log" in out, out[-3000:]
    result.assert_outcomes(passed=2, errors=1)  # the dying test's teardown; the next runs
