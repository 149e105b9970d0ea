"""`/metrics` in multiprocess mode survives a process killed while creating its file."""

from __future__ import annotations

import json
import subprocess
import sys

from prometheus_client.mmap_dict import MmapedDict

from service.infra import metrics
from tests.conftest import ROOT


class NoSystemState:
    def collect(self):
        return []


def test_an_empty_metrics_file_left_by_a_killed_process_is_skipped(tmp_path, monkeypatch):
    # Given a deployment's metrics directory with a live process's counter and the empty file
    # of a process killed between creating its file and sizing it
    monkeypatch.setenv(metrics.ENV, str(tmp_path))
    live = MmapedDict(str(tmp_path / "counter_100.db"))
    key = json.dumps(
        ("astronote_probe_total", "astronote_probe_total", {}, "probe"), sort_keys=True
    )
    live.write_value(key, 3.0, 0.0)
    live.close()
    (tmp_path / "histogram_28444.db").write_bytes(b"")

    # When the exposition is built, then it is, with the live process's value (it raised
    # struct.error, a 500 on every /metrics after)
    body, _ = metrics.exposition(NoSystemState())
    assert b"astronote_probe_total 3.0" in body


RACE = """
import threading
from service.infra import metrics

start, errors = threading.Barrier(32), []

def first_count():
    start.wait()
    try:
        metrics.instruments().messages.labels("accepted").inc()
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=first_count) for _ in range(32)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors or "ok")
"""


def test_threads_counting_their_first_message_at_once_create_the_metrics_once():
    # A new process (the metrics are created once per process), 32 threads at a barrier:
    # with lru_cache, some created them again and were refused DuplicateTimeseries
    for _ in range(5):
        result = subprocess.run(
            [sys.executable, "-c", RACE], capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok", result.stdout


def test_a_metric_that_cannot_be_recorded_never_fails_its_caller(monkeypatch, caplog):
    def broken():
        raise OSError("No space left on device")

    monkeypatch.setattr(metrics, "instruments", broken)
    metrics.count_messages({"accepted": 3})
    metrics.observe_provider_call("/smsbulk", "accepted", 0.1)
    assert "recording a metric failed" in caplog.text
