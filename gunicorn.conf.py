"""gunicorn reads this file from the working directory (the Procfile's and the tests'):
JSON logs in the master as in the workers, and a truthful start line with the bound address."""
from api.serving import LOGCONFIG, post_worker_init, when_ready  # noqa: F401

logconfig_dict = LOGCONFIG
