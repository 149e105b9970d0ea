"""gunicorn entry point: `gunicorn api.wsgi:app`."""

from api.app import create_wsgi
from service.infra import runtime

app = create_wsgi(runtime.boot("web"))
