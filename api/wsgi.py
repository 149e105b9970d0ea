"""gunicorn entry point: `gunicorn api.wsgi:app`."""

from api.app import create_app
from service.infra import runtime

app = create_app(runtime.boot("web"))
