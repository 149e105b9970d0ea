"""An HTTP simulator of the Mitto SMS API, for end-to-end tests, the demo and benchmarks.

The implementation lives in the `astronote.sim` package (see its docstring for the endpoints and
fault injection); this module keeps `python -m astronote.provider_sim` and
`from astronote.provider_sim import ...` working.
"""

from __future__ import annotations

from astronote.sim import (
    DEFAULT_CONFIG,
    DLR_STATUSES,
    FORCED_OUTCOMES,
    SimServer,
    Simulator,
    main,
    make_server,
    serve,
    start_background,
)

__all__ = [
    "DEFAULT_CONFIG",
    "FORCED_OUTCOMES",
    "DLR_STATUSES",
    "Simulator",
    "SimServer",
    "make_server",
    "start_background",
    "serve",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
