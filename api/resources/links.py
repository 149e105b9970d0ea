"""Public link routes: `/r/{code}` (short links) and `/u/{token}` (unsubscribe)."""
from __future__ import annotations

import html

import falcon

from api import schemas
from api.access import Access
from service import contacts, links
from service.infra.config import Settings

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 30em; margin: 4em auto"><h1>{title}</h1>
<p>{text}</p></body></html>"""


def page(resp: falcon.Response, status: str, title: str, text: str) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.text = PAGE.format(title=html.escape(title), text=html.escape(text))


class ShortLinkResource:
    auth = Access.PUBLIC

    def on_get(self, req: falcon.Request, resp: falcon.Response, code: str) -> None:
        url = links.follow(code) if schemas.SHORT_CODE.fullmatch(code) else None
        if url is None:
            page(resp, falcon.HTTP_404, "Link not found", "This link does not exist.")
            return
        raise falcon.HTTPFound(url)


class UnsubscribeResource:
    auth = Access.PUBLIC

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        owner = links.read_unsubscribe_token(self.secret, token)
        if owner is None or not contacts.opt_out(*owner, source="link"):
            page(resp, falcon.HTTP_404, "Link not valid", "This unsubscribe link is not valid.")
            return
        page(resp, falcon.HTTP_200, "You are unsubscribed",
             "You will not receive further messages from this shop.")
