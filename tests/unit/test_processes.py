"""The Procfile as the one source of process commands: what Heroku runs is what `astronote up`,
the demo and the end-to-end tests run, with the overrides they ask for and nothing else."""

from __future__ import annotations

import importlib.util
import shlex
import sys

from astronote import cli, processes
from service.infra import dispatch


def test_the_procfile_worker_consumes_exactly_the_queues_that_are_published_to():
    # Given the Procfile's worker line, as Heroku reads it
    words = shlex.split(processes.read_procfile()["worker"])

    # Then it names every queue that dispatch publishes to, and only those, in order
    assert processes.option_values(words, "--queues") == list(dispatch.QUEUES)


def test_every_procfile_process_runs_with_this_interpreter_and_an_installed_module():
    # Given the Procfile's process types
    for process in ("release", "web", "worker", "clock"):
        # When their commands are built
        argv = processes.command(process)

        # Then each runs as `python -m <module>` with this venv's interpreter
        assert argv[:2] == [sys.executable, "-m"], argv
        assert importlib.util.find_spec(argv[2]) is not None, argv


def test_procfile_variables_come_from_the_given_environment_else_their_defaults():
    # Given an environment with PORT and an empty WEB_CONCURRENCY
    variables = {"PORT": "8123", "WEB_CONCURRENCY": ""}

    # When the web command is built from it
    argv = processes.command("web", variables)

    # Then PORT is used and the empty variable falls back to the Procfile's default
    assert processes.option_values(argv, "--bind") == ["0.0.0.0:8123"]
    assert processes.option_values(argv, "--workers") == ["2"]


def test_options_replace_the_procfiles_values_or_are_appended():
    # When a worker for one queue with explicit sizes is asked for
    argv = processes.command(
        "worker",
        {"WORKER_PROCESSES": "1", "WORKER_THREADS": "3"},
        {"--queues": ("sms-send",), "--verbose": ()},
    )

    # Then the Procfile's options carry those values and the new flag comes last
    assert argv[1:] == [
        "-m",
        "dramatiq",
        "actors",
        "--skip-logging",
        "--processes",
        "1",
        "--threads",
        "3",
        "--queues",
        "sms-send",
        "--verbose",
    ]


def test_the_web_command_of_a_local_stack():
    # When the web process is asked to bind locally with fewer threads and a graceful timeout
    argv = processes.command(
        "web",
        {"WEB_CONCURRENCY": "1"},
        {"--bind": "127.0.0.1:9001", "--threads": "4", "--graceful-timeout": "5"},
    )

    # Then the Procfile's command carries exactly those values
    assert argv[1:] == [
        "-m",
        "gunicorn",
        "--config",
        "python:api.gunicorn_conf",
        "api.wsgi:app",
        "--bind",
        "127.0.0.1:9001",
        "--worker-class",
        "api.workers.TimedThreadWorker",
        "--workers",
        "1",
        "--threads",
        "4",
        "--graceful-timeout",
        "5",
    ]


def test_a_missing_demo_extra_is_named_in_one_line():
    # Given a package of the extra that is not installed
    message = cli.missing_demo_extra(
        "demo", {"requests": "requests", "no_such_module_here": "no-such-package"}
    )

    # Then one line names it and how to install the extra; nothing when all are there
    assert message is not None and "\n" not in message
    assert "missing: no-such-package" in message and "astronote[demo]" in message
    assert cli.missing_demo_extra("demo", {"requests": "requests"}) is None


def test_up_and_demo_take_their_ports_from_port_and_sim_port(capsys):
    from astronote.stack import wanted_port

    # Unset: the defaults; set: the port asked for
    assert wanted_port({}, "SIM_PORT", 9090) == 9090
    assert wanted_port({"SIM_PORT": "18202"}, "SIM_PORT", 9090) == 18202
    # A bad one ends the command with one line naming it
    for bad in ("sim", "0", "70000"):
        try:
            wanted_port({"SIM_PORT": bad}, "SIM_PORT", 9090)
        except SystemExit as stop:
            assert stop.code == 2
        else:
            raise AssertionError(f"SIM_PORT={bad} was taken")
        assert f"SIM_PORT='{bad}' must be a port" in capsys.readouterr().err
