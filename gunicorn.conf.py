"""gunicorn reads this file from the working directory when no `--config` is given (tests and
benchmarks starting gunicorn by hand): the web's configuration, `api/gunicorn_conf.py`."""

from api.gunicorn_conf import *  # noqa: F403
from api.gunicorn_conf import on_starting, post_worker_init, when_ready  # noqa: F401
