"""The chaos suite's fault points: off unless CHAOS_FAULTS arms them, then kill or raise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.infra import config, faults
from service.infra.config import ConfigError
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def disarm():
    yield
    faults.arm(())


def test_chaos_faults_are_parsed_and_validated():
    loaded = config.load({"CHAOS_FAULTS": "after_claim_commit=kill:0.05, inside_persist=raise"})
    assert loaded.chaos_faults == (
        ("after_claim_commit", "kill", 0.05),
        ("inside_persist", "raise", 1.0),
    )
    assert config.load({}).chaos_faults == ()
    for bad, says in [
        ("nowhere=kill:1", "unknown fault point 'nowhere'"),
        ("inside_persist=explode:1", "needs an action, kill or raise"),
        ("inside_persist=raise:often", "is not a number"),
        ("inside_persist=raise:1.5", "is not in [0, 1]"),
    ]:
        with pytest.raises(ConfigError) as error:
            config.load({"CHAOS_FAULTS": bad})
        assert str(error.value).startswith("CHAOS_FAULTS: ") and says in str(error.value)


def test_an_unarmed_or_unlucky_point_does_nothing_and_an_armed_one_raises():
    faults.fault_point("inside_persist")  # nothing armed
    faults.arm([("inside_persist", "raise", 0.0), ("inside_repair", "raise", 1.0)])
    for _ in range(1000):
        faults.fault_point("inside_persist")
        faults.fault_point("after_claim_commit")  # not armed
    with pytest.raises(faults.InjectedFault, match="inside_repair"):
        faults.fault_point("inside_repair")


def test_a_kill_fault_ends_the_process_with_sigkill():
    code = (
        "from service.infra import faults\n"
        "faults.arm([('inside_finalisation', 'kill', 1.0)])\n"
        "faults.fault_point('inside_finalisation')\n"
        "print('survived')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9 and "survived" not in done.stdout
