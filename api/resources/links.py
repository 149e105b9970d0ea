"""Public link routes: `/r/{code}` (short links) and `/u/{token}` (unsubscribe)."""

from __future__ import annotations

import html

import falcon

from api import schemas
from api.access import Access
from api.docs import HTML, Answer, Operation
from service import audit, contacts, links
from service.infra.config import Settings

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 30em; margin: 4em auto"><h1>{title}</h1>
<p>{text}</p>{extra}</body></html>"""

# No action attribute: the form posts to the very URL the page was opened at. The field is
# RFC 8058's one-click body, so this form and a mail client's one-click POST are one request.
CONFIRM_FORM = """<form method="post">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>"""


LOCATION = {"Location": ({"type": "string", "format": "uri"}, True)}
REDIRECT = {
    302: Answer("To the link's destination", headers=LOCATION),
    404: Answer("No link has this code (an HTML page)", schemas.HTML_PAGE, HTML),
    410: Answer("The link was disabled (an HTML page)", schemas.HTML_PAGE, HTML),
}
UNSUBSCRIBE_PAGES = {
    200: Answer("The page (HTML)", schemas.HTML_PAGE, HTML),
    404: Answer("The link is not genuine (an HTML page)", schemas.HTML_PAGE, HTML),
}
# The confirmation form's field, which is also RFC 8058's one-click body; it is not read.
ONE_CLICK = {"type": "object", "properties": {"List-Unsubscribe": {"const": "One-Click"}}}


def page(resp: falcon.Response, status: str, title: str, text: str, extra: str = "") -> None:
    """An HTML page; `title` and `text` are escaped, `extra` is markup of our own."""
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.text = PAGE.format(title=html.escape(title), text=html.escape(text), extra=extra)


class ShortLinkResource:
    auth = Access.PUBLIC
    docs = {
        "GET": Operation(
            "Follow a short link (the click is counted, unless a link previewer fetches it)",
            REDIRECT,
        ),
        "HEAD": Operation("Check a short link (never counted)", REDIRECT),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, code: str) -> None:
        self.redirect(resp, code, count=not links.is_link_previewer(req.user_agent))

    def on_head(self, req: falcon.Request, resp: falcon.Response, code: str) -> None:
        # A HEAD is a client checking the link, never a person following it.
        self.redirect(resp, code, count=False)

    @staticmethod
    def redirect(resp: falcon.Response, code: str, count: bool) -> None:
        link = links.follow(code, count) if schemas.SHORT_CODE.fullmatch(code) else None
        if link is None:
            page(resp, falcon.HTTP_404, "Link not found", "This link does not exist.")
        elif link.disabled:
            page(resp, falcon.HTTP_410, "Link disabled", "This link is no longer available.")
        else:
            raise falcon.HTTPFound(link.location)


class UnsubscribeResource:
    """GET only shows a confirmation page: link scanners and message previewers fetch every
    link of a message, and must not opt anybody out. Confirming (POST) opts out."""

    auth = Access.PUBLIC
    docs = {
        "GET": Operation(
            "The unsubscribe confirmation page, naming the shop; changes nothing", UNSUBSCRIBE_PAGES
        ),
        "HEAD": Operation(
            "Check an unsubscribe link (GET's status and headers, no body; changes nothing)",
            UNSUBSCRIBE_PAGES,
        ),
        "POST": Operation(
            "Confirm: the contact is opted out (idempotent)",
            UNSUBSCRIBE_PAGES,
            other_bodies={"application/x-www-form-urlencoded": ONE_CLICK},
            body_required=False,
        ),
    }

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        private(resp)
        owner = links.read_unsubscribe_token(self.secret, token)
        state = contacts.subscription(*owner) if owner else None
        if state is None:
            not_valid(resp)
        elif state.opted_out:
            done(resp, state.shop_name)
        else:
            page(
                resp,
                falcon.HTTP_200,
                f"Unsubscribe from {state.shop_name}?",
                f"You will no longer receive text messages from {state.shop_name}.",
                CONFIRM_FORM,
            )

    # Link checkers and mail clients ask with HEAD; it reads like GET and changes nothing.
    on_head = on_get

    def on_post(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        # The body is not read: the form's and RFC 8058's one-click body say the same thing.
        private(resp)
        owner = links.read_unsubscribe_token(self.secret, token)
        state = (
            contacts.opt_out(*owner, self.secret, audit.UNSUBSCRIBE_PAGE, source="link")
            if owner
            else None
        )
        if state is None:
            not_valid(resp)
        else:
            done(resp, state.shop_name)


def private(resp: falcon.Response) -> None:
    # The URL is the contact's credential: keep it out of caches and of Referer headers.
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("Referrer-Policy", "no-referrer")


def not_valid(resp: falcon.Response) -> None:
    page(resp, falcon.HTTP_404, "Link not valid", "This unsubscribe link is not valid.")


def done(resp: falcon.Response, shop_name: str) -> None:
    page(
        resp,
        falcon.HTTP_200,
        "You are unsubscribed",
        f"You will not receive further messages from {shop_name}.",
    )
