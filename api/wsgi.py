"""gunicorn entry point: `gunicorn api.wsgi:app`."""

import sys

from api.app import create_wsgi
from service.infra import runtime

settings = runtime.boot("web")
# A light request gives the GIL up at each PostgreSQL or Redis call and must win it back from
# any CPU-bound request of the process each time: the interval bounds each of those waits.
sys.setswitchinterval(settings.web_switch_interval_us / 1_000_000)
app = create_wsgi(settings)
