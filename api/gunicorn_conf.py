"""gunicorn's configuration, a module of the package (the Procfile's `--config
python:api.gunicorn_conf`), so that it applies wherever the web is started from, an installed
copy included: JSON logs in the master as in the workers, an access log without secrets, the
configuration checked before any worker starts, and a truthful start line with the bound
address. `gunicorn.conf.py` in the checkout (read from the working directory when no
`--config` is given) is this module again."""

from api.serving import LOGCONFIG, on_starting, post_worker_init, when_ready  # noqa: F401

logconfig_dict = LOGCONFIG
logger_class = "api.access_log.AccessLogger"
# gunicorn 27's control socket (for `gunicornc`, which nothing here uses) defaults to one path
# per user, ~/.gunicorn/gunicorn.ctl: every web process on a machine (two masters, a restart
# beside an orphan) would take it from the other. Off.
control_socket_disable = True
