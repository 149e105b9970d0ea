"""The Procfile's process commands as argv lists, for everything that runs them locally.

The Procfile is the source of record (Heroku reads it); `astronote up`, the demo and the
end-to-end tests build their commands here instead of writing them again. Each program runs as
`python -m <program>` with this interpreter, so the virtualenv's packages are used without
activating it. `${VAR:-default}` is expanded from the variables the caller passes, never from
this process's environment behind its back: a stack says which values it wants.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SOURCE_PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"
# A Procfile program and the module that `python -m` runs for it.
MODULES = {"gunicorn": "gunicorn", "dramatiq": "dramatiq", "astronote": "astronote"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")

Options = Mapping[str, str | Sequence[str]]


def procfile_path() -> Path:
    """The Procfile of the source tree, else (an installed copy) the one in the working
    directory."""
    return SOURCE_PROCFILE if SOURCE_PROCFILE.exists() else Path.cwd() / "Procfile"


def read_procfile(path: Path | None = None) -> dict[str, str]:
    """Process type -> command line, as written."""
    lines = (path or procfile_path()).read_text().splitlines()
    entries = (
        line.partition(":") for line in lines if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): command.strip() for name, _, command in entries}


def expand(word: str, variables: Mapping[str, str]) -> str:
    """`${VAR:-default}`, `${VAR}` and `$VAR` as the shell expands them: the default when VAR
    is unset or empty, else nothing."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[3]
        return variables.get(name) or (match[2] or "")

    return _VARIABLE.sub(value, word)


def option_values(argv: Sequence[str], name: str) -> list[str] | None:
    """The values after option `name` (up to the next option), or None when it is absent."""
    if name not in argv:
        return None
    start = list(argv).index(name) + 1
    end = start
    while end < len(argv) and not argv[end].startswith("-"):
        end += 1
    return list(argv[start:end])


def with_options(argv: Sequence[str], options: Options) -> list[str]:
    """`argv` with each option's values replaced where it has the option, else appended.
    A value is one string or a sequence of them (`--queues a b`); an empty one is a flag."""
    result = list(argv)
    for name, value in options.items():
        values = [value] if isinstance(value, str) else list(value)
        present = option_values(result, name)
        if present is None:
            result += [name, *values]
        else:
            start = result.index(name) + 1
            result[start : start + len(present)] = values
    return result


def command(
    process: str,
    variables: Mapping[str, str] | None = None,
    options: Options | None = None,
    procfile: Path | None = None,
) -> list[str]:
    """The argv of Procfile process type `process` (web, worker, clock, release), with its
    `${VAR:-default}` taken from `variables` (the Procfile's defaults when not given) and
    `options` replacing or adding command-line options."""
    line = read_procfile(procfile)[process]
    program, *arguments = (expand(word, variables or {}) for word in shlex.split(line))
    if program == "python":
        argv = [sys.executable, *arguments]
    else:
        argv = [sys.executable, "-m", MODULES[program], *arguments]
    return with_options(argv, options or {})


def simulator(port: int, api_key: str, options: Sequence[str] = ()) -> list[str]:
    """The provider simulator: not a Procfile process, production talks to the real one."""
    return [
        sys.executable,
        "-m",
        "astronote",
        "provider-sim",
        "--port",
        str(port),
        "--api-key",
        api_key,
        *options,
    ]
