"""Webhooks: a task's end POSTed to the callback URL its creator gave, the Standard Webhooks way.

    submit: parameters.callback_url -> `check_callback` (syntax, size, guarded address rules)
    end:    TaskStore writes the terminal status and an outbox row in one transaction
    send:   `Deliverer` (a thread in every API process) claims due rows, renders the task's
            GET body, signs it, POSTs it through the guarded fetcher, and records the outcome;
            a failure is retried after `Backoff`, a bounded number of times

Signing follows https://www.standardwebhooks.com: headers `webhook-id` (the outbox row's id:
unique per message, the same on every retry), `webhook-timestamp` (unix seconds of this
attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed
with the API key's secret, `whsec_<base64 of 32 bytes>`, so existing verifiers work.

The secret is *derived*, not stored: HMAC-SHA256(server secret_key, "webhook-secret:" + key
id). Every replica computes the same one from the secret it already shares (signed URLs need
it); nothing new has to be encrypted, stored, migrated or backed up; and knowing one key's
webhook secret reveals neither the server's key nor another key's secret (HMAC is a PRF).
The price: one key's secret cannot be rotated alone (create a new API key; rotating
`secret_key` rotates them all).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Protocol
from urllib.parse import urlsplit

from wanserve.clock import Clock, utcnow
from wanserve.errors import InvalidURL
from wanserve.media.fetch import Posted
from wanserve.request import CALLBACK_FIELD
from wanserve.tasks.outbox import OutboxMessage, SqlOutbox

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"


def webhook_secret(server_key: bytes, key_id: str) -> str:
    """The signing secret of API key `key_id`: `whsec_` + base64 of 32 derived bytes."""
    derived = hmac.new(server_key, b"webhook-secret:" + key_id.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(derived).decode()


def signature(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of one attempt: `v1,<base64 HMAC-SHA256>`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    secret: str, *, message_id: str, timestamp: int, body: bytes
) -> list[tuple[str, str]]:
    return [
        ("webhook-id", message_id),
        ("webhook-timestamp", str(timestamp)),
        (
            "webhook-signature",
            signature(secret, message_id=message_id, timestamp=timestamp, body=body),
        ),
    ]


class Destinations(Protocol):
    """The guarded network rules a callback URL must pass (`media.fetch.SafeFetcher`)."""

    def check(self, url: str, *, field: str) -> None: ...

    def post(
        self,
        url: str,
        *,
        field: str,
        body: bytes,
        headers: list[tuple[str, str]],
        timeout: float,
    ) -> Posted: ...


def check_callback(value: str | None, *, destinations: Destinations) -> str | None:
    """The callback URL of a create request (its type and length read by its door,
    `wanserve.request.callback_url`), or None; `InvalidURL` naming the field when it could
    never be delivered to."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        raise InvalidURL(f"{CALLBACK_FIELD} is not a valid URL.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidURL(f"{CALLBACK_FIELD} must be an http or https URL.")
    if parts.username is not None or parts.password is not None:
        # They would be sent nowhere (no basic auth is added) and stored in the task row.
        raise InvalidURL(
            f"{CALLBACK_FIELD} must not carry credentials (user:password@); verify the "
            "webhook-signature header instead."
        )
    if parts.fragment:
        raise InvalidURL(f"{CALLBACK_FIELD} must not have a #fragment.")
    destinations.check(value, field=CALLBACK_FIELD)
    return value


@dataclass(frozen=True)
class Backoff:
    """When to try again after a failed attempt: `delays[n-1]` after the n-th failure (the
    last delay repeats), and no attempt after the `max_attempts`-th."""

    delays: tuple[float, ...]
    max_attempts: int

    def after(self, attempt: int) -> timedelta | None:
        """The wait before the attempt after `attempt` (1-based), or None: give up."""
        if attempt >= self.max_attempts:
            return None
        return timedelta(seconds=self.delays[min(attempt, len(self.delays)) - 1])


class Outcome(StrEnum):
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # no 2xx; another attempt will follow
    ABANDONED = "abandoned"  # no 2xx on the last attempt allowed


class DeliveryObserver(Protocol):
    def webhook_attempted(self, outcome: Outcome) -> None: ...


# The body of a message: its task as the task's owner would GET it now (the message id as its
# `request_id`); None when the task is gone.
Render = Callable[[OutboxMessage], bytes | None]


class Deliverer:
    """Sends due outbox messages; one thread per API process, `concurrency` sends at a time."""

    def __init__(
        self,
        *,
        outbox: SqlOutbox,
        render: Render,
        destinations: Destinations,
        secret_for: Callable[[str], str],
        backoff: Backoff,
        timeout_seconds: float,
        poll_seconds: float,
        concurrency: int,
        observer: DeliveryObserver | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._outbox = outbox
        self._render = render
        self._destinations = destinations
        self._secret_for = secret_for
        self._backoff = backoff
        self._timeout = timeout_seconds
        self._poll = poll_seconds
        self._concurrency = concurrency
        self._observer = observer
        self._now = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def run_once(self) -> list[Outcome]:
        """Claim what is due and send it; the outcomes of the attempts made."""
        # The lease outlasts any attempt (its timeout bounds it), so a live sender never
        # loses a claim it is still using; a dead one's messages come back after it.
        lease = timedelta(seconds=self._timeout * 2 + 30)
        messages = self._outbox.claim_due(limit=self._concurrency * 4, lease=lease)
        if not messages:
            return []
        if self._pool is None or len(messages) == 1:
            return [self._attempt(m) for m in messages]
        return list(self._pool.map(self._attempt, messages))

    def _attempt(self, message: OutboxMessage) -> Outcome:
        body = self._render(message)
        if body is None:  # purged with its task meanwhile: nothing left to report
            self._outbox.drop(message)
            return Outcome.ABANDONED
        timestamp = int(self._now().timestamp())
        headers = signed_headers(
            self._secret_for(message.api_key_id),
            message_id=message.id,
            timestamp=timestamp,
            body=body,
        )
        try:
            posted = self._destinations.post(
                message.url,
                field=CALLBACK_FIELD,
                body=body,
                headers=headers,
                timeout=self._timeout,
            )
            error = None if 200 <= posted.status < 300 else _answer(posted)
        except InvalidURL as exc:  # refused address, DNS, connect, timeout, protocol
            error = exc.message
        except Exception as exc:  # never let one message stop the deliverer
            log.exception("webhook %s for task %s: unexpected error", message.id, message.task_id)
            error = f"unexpected error: {type(exc).__name__}"
        outcome = self._settle(message, error)
        if self._observer is not None:
            self._observer.webhook_attempted(outcome)
        return outcome

    def _settle(self, message: OutboxMessage, error: str | None) -> Outcome:
        if error is None:
            self._outbox.delivered(message)
            log.info("webhook %s for task %s delivered", message.id, message.task_id)
            return Outcome.DELIVERED
        wait = self._backoff.after(message.attempt)
        if wait is None:
            self._outbox.abandon(message, error=error)
            log.warning(
                "webhook %s for task %s abandoned after %d attempts: %s",
                message.id,
                message.task_id,
                message.attempt,
                error,
            )
            return Outcome.ABANDONED
        self._outbox.retry(message, after=wait, error=error)
        log.info(
            "webhook %s for task %s: attempt %d failed (%s); next in %.0f s",
            message.id,
            message.task_id,
            message.attempt,
            error,
            wait.total_seconds(),
        )
        return Outcome.FAILED

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="wanserve-webhook")
        self._thread = threading.Thread(target=self._loop, name="wanserve-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = bool(self.run_once())
            except Exception:  # the database may be down for a while: keep trying
                log.exception("webhook delivery pass failed; will retry")
                busy = False
            if not busy and self._stop.wait(self._poll):
                return


def _answer(posted: Posted) -> str:
    text = posted.answer.decode("utf-8", "replace").strip().splitlines()
    return f"HTTP {posted.status}" + (f": {text[0][:200]}" if text else "")


def render_json(document: object) -> bytes:
    """JSON bytes exactly as the API's responses are written (FastAPI's `JSONResponse`)."""
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
