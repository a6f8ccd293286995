"""Nothing passes unnoticed (#30 item 3): a test during which anvil dies fails, with the end
of anvil's log, instead of the next test quietly getting a restarted devnet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]

INNER = '''
import pytest


def kill(devnet):
    devnet.anvil.process.kill()
    devnet.anvil.process.wait()


def test_whose_anvil_dies_after_its_last_call(devnet):
    devnet.mine(1)
    kill(devnet)


def test_after_it(devnet):
    assert devnet.client.block_number() > 0


def test_that_fails_because_its_anvil_died(devnet):
    kill(devnet)
    devnet.client.block_number()


@pytest.fixture
def dies_at_teardown(devnet):
    yield devnet
    kill(devnet)


def test_whose_anvil_dies_in_another_fixtures_teardown(dies_at_teardown):
    assert dies_at_teardown.client.block_number() > 0


def test_after_that(devnet):
    assert devnet.client.block_number() > 0
'''


def test_a_test_whose_anvil_dies_fails_with_its_log(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_inner=INNER)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("COLUMNS", "400")  # (the summary's lines whole)
    result = pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider",
                                           "-p", "no:xdist", "--rootdir", str(pytester.path),
                                           "-rfE")
    out = result.stdout.str()
    # A test that passed while anvil died fails in its own call, not as a teardown error.
    assert "FAILED test_inner.py::test_whose_anvil_dies_after_its_last_call - Failed: anvil " \
           "exited during this test" in out, out[-4000:]
    # One that failed because of it carries anvil's log beside its own error.
    assert "Captured anvil call" in out, out[-4000:]
    # A death in a fixture's teardown fails that test at its teardown, with the log.
    assert "ERROR test_inner.py::test_whose_anvil_dies_in_another_fixtures_teardown - Failed: " \
           "anvil exited during this test's teardown" in out, out[-4000:]
    assert out.count("the end of its log") >= 3, out[-4000:]
    # The tests after each death ran, on a devnet started again.
    result.assert_outcomes(passed=3, failed=2, errors=1)
