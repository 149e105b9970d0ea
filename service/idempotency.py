"""Idempotency keys (SPEC 5), by Stripe's rules: a client that retries a POST with the same
`Idempotency-Key` gets the first answer again instead of a second campaign or top-up.

- same key, same request: the stored answer is replayed (status and body);
- same key, another request (method, route or body differ): refused (`KeyReused`, 422);
- same key while the first request still runs: refused (`KeyInFlight`, 409);
- keys are per shop and kept `RETENTION` (24 h); an answer the server failed to produce (5xx)
  is not stored, so the client may retry it.

The row is inserted before the request runs, so two concurrent duplicates are decided by the
primary key, never by a read followed by a write. A request whose process died leaves its row
`in_flight`; after `IN_FLIGHT_TIMEOUT` the key may be used again (the actions behind it are
themselves conditional updates or carry their own references, so a rerun cannot spend twice).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import peewee as pw

from models import IdempotencyKey
from models.database import db, execute
from service.errors import InvalidInput, InvalidTransition

RETENTION = "24 hours"
IN_FLIGHT_TIMEOUT = "2 minutes"
MAX_KEY_LENGTH = 255
HEADER = "Idempotency-Key"


class KeyInFlight(InvalidTransition):
    """A request with this key is still being processed."""

    title = "Request in progress"


class KeyReused(InvalidInput):
    """The key was first used for a different request."""

    title = "Idempotency key reused"


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: bytes
    content_type: str | None


def canonical_body(body: bytes, media_type: str) -> bytes:
    """A JSON body as its content (keys sorted, no spacing): the same fields sent in another
    order or spacing are the same request (Stripe compares parameters, not bytes; a client
    library re-serialising a retry was refused 422). Any other body, or JSON that does not
    parse (the resource refuses it), as its bytes."""
    if media_type not in ("application/json", ""):  # the API reads a body without one as JSON
        return body
    if not body.strip():
        return b"{}"  # a bodiless POST takes nothing, `{}` or `null` alike
    try:
        document = json.loads(body)
    except ValueError:
        return body
    return json.dumps(
        {} if document is None else document, sort_keys=True, separators=(",", ":")
    ).encode()


def fingerprint(method: str, target: str, body: bytes, media_type: str = "") -> str:
    """What makes two requests 'the same': method, path with its query, the body (a JSON
    body by its content, `canonical_body`) and its media type."""
    body = canonical_body(body, media_type)
    digest = hashlib.sha256()
    for part in (method.upper().encode(), target.encode(), body, media_type.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidInput(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters", HEADER
        )
    return key


def begin(
    shop_id: int, key: str, request_fingerprint: str, also: tuple[str, ...] = ()
) -> StoredAnswer | None:
    """Claim `key` for this request (None: run it), or return the answer to replay. A key
    stored under one of the fingerprints `also` is this request too (as an earlier version
    fingerprinted it)."""
    validate_key(key)
    with db.atomic():
        _forget_expired(shop_id, key)
        claimed = (
            IdempotencyKey.insert(shop=shop_id, key=key, fingerprint=request_fingerprint)
            .on_conflict_ignore()
            .returning(IdempotencyKey.key)
            .execute()
        )
        if list(claimed):
            return None
        row = (
            IdempotencyKey.select()
            .where(IdempotencyKey.shop == shop_id, IdempotencyKey.key == key)
            .first()
        )
    if row is None:  # expired and deleted by a concurrent request between our two statements
        raise KeyInFlight(f"a request with this {HEADER} is in progress; retry shortly")
    if row.fingerprint != request_fingerprint and row.fingerprint not in also:
        raise KeyReused(f"this {HEADER} was used for a different request", HEADER)
    if row.state == "in_flight":
        raise KeyInFlight(f"a request with this {HEADER} is still in progress")
    return StoredAnswer(row.response_status, bytes(row.response_body or b""), row.response_type)


def finish(shop_id: int, key: str, answer: StoredAnswer) -> None:
    """Store the answer of the request that claimed `key`, for its retries to replay; as
    ERASED_ANSWER when an erasure of the shop marked the key while the request was in flight
    (`forget_answers_naming`) and the answer names a number. The mark is read from the row's
    version this UPDATE writes over: an erasure holding the row waits to commit first."""
    names = _NUMBER_IN_ANSWER.search(answer.body) is not None
    erased = f"CASE WHEN %(names)s AND response_status = {ERASED_MARK}"
    with db.atomic():
        execute(
            "UPDATE idempotency_key SET state = 'done', finished_at = now(),"
            f" response_status = {erased} THEN %(gone_status)s ELSE %(status)s END,"
            f" response_body = {erased} THEN %(gone_body)s ELSE %(body)s END,"
            f" response_type = {erased} THEN %(gone_type)s ELSE %(type)s END"
            " WHERE shop_id = %(shop)s AND key = %(key)s AND state = 'in_flight'",
            {
                "names": names,
                "gone_status": ERASED_ANSWER.status,
                "gone_body": ERASED_ANSWER.body,
                "gone_type": ERASED_ANSWER.content_type,
                "status": answer.status,
                "body": answer.body,
                "type": answer.content_type,
                "shop": shop_id,
                "key": key,
            },
        )


# A number as an answer spells it: an E.164 JSON string (a test send's answer names one).
_NUMBER_IN_ANSWER = re.compile(rb'"\+[1-9][0-9]{5,14}"')


def abandon(shop_id: int, key: str) -> None:
    """Forget a claimed key whose request produced no answer worth keeping (a 5xx)."""
    with db.atomic():
        (
            IdempotencyKey.delete()
            .where(
                IdempotencyKey.shop == shop_id,
                IdempotencyKey.key == key,
                IdempotencyKey.state == "in_flight",
            )
            .execute()
        )


def _forget_expired(shop_id: int, key: str) -> None:
    expired = IdempotencyKey.created_at < pw.SQL(f"now() - interval '{RETENTION}'")
    abandoned = (IdempotencyKey.state == "in_flight") & (
        IdempotencyKey.created_at < pw.SQL(f"now() - interval '{IN_FLIGHT_TIMEOUT}'")
    )
    (
        IdempotencyKey.delete()
        .where(IdempotencyKey.shop == shop_id, IdempotencyKey.key == key, expired | abandoned)
        .execute()
    )


# What a replay answers once the stored answer held a number (and the texts sent to it) that
# has since been erased: the answer is not kept, and the request is not run again either.
ERASED_ANSWER = StoredAnswer(
    410,
    b'{"title": "Answer erased", "description": "the first answer to this request held'
    b' personal data that has since been erased"}',
    "application/json",
)
# On a key in flight (no answer stored yet): an erasure of the shop ran while it was.
ERASED_MARK = ERASED_ANSWER.status


def forget_answers_naming(shop_id: int, phone: str | None) -> int:
    """Erasure (SPEC 11): the shop's stored answers that carry `phone` (every stored answer of
    the shop when None: the whole shop is erased) are replaced by ERASED_ANSWER, and the
    shop's keys still in flight are marked (ERASED_MARK): an answer they store naming a number
    is replaced too (`finish`), since it may have been made before this erasure. Inside the
    caller's transaction."""
    (
        IdempotencyKey.update(response_status=ERASED_MARK)
        .where((IdempotencyKey.shop == shop_id) & (IdempotencyKey.state == "in_flight"))
        .execute()
    )
    which = (IdempotencyKey.shop == shop_id) & (IdempotencyKey.state == "done")
    if phone is not None:
        # As a JSON string, quotes included: "+4930123456" is not in "+49301234567".
        which &= pw.SQL(
            "position(convert_to(%s, 'UTF8') IN response_body) > 0", (json.dumps(phone),)
        )
    return (
        IdempotencyKey.update(
            response_status=ERASED_ANSWER.status,
            response_body=ERASED_ANSWER.body,
            response_type=ERASED_ANSWER.content_type,
        )
        .where(which)
        .execute()
    )
