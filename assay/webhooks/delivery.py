"""Sending deliveries: one signed POST per attempt, retried with backoff, every attempt logged.

The worker runs inside ``assay server`` (``WebhookWorker.start``), not as a Dagster sensor:
deliveries are read from the event log, which every writer shares, so one process that
watches it sees the daemon's events as well as the server's; a sensor's tick would have to
wait on receivers and their retries, and its interval (30 s by default) would delay every
delivery; and the server is where webhooks are managed and their secrets read. A server that
is down delivers what it missed when it comes back (each webhook keeps its own cursor in the
database), and several servers on one database share the work without sending anything
twice (``WebhookStore.claim``).

An attempt that times out, cannot connect, or is answered 5xx, 429 or 408 is retried after
``backoff_base_s × 2^(n-1)`` (capped at ``backoff_max_s``, with jitter), at most
``max_attempts`` times in all; any other 4xx or a redirect (never followed) fails the
delivery at once, as does a URL the host policy no longer allows or a secret that cannot be
read. The worker sends one delivery at a time, each bounded by ``timeout_s``; deliveries of
one webhook are not guaranteed to arrive in event order (a retried one arrives late), as with
MLflow.

Settings: ``ASSAY_WEBHOOK_MAX_ATTEMPTS`` (5), ``ASSAY_WEBHOOK_BACKOFF_S`` (1),
``ASSAY_WEBHOOK_BACKOFF_MAX_S`` (60), ``ASSAY_WEBHOOK_TIMEOUT_S`` (10),
``ASSAY_WEBHOOK_POLL_S`` (1). The secret never reaches a log line, an attempt's error or an
answer: errors are built from the exception's type and scrubbed text, and name the URL only
by its scheme, host and port.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from assay.core.security import ForbiddenAddressError, redact_then_cut
from assay.models.guarded_transport import checked_transport
from assay.registry.store import Registry
from assay.webhooks import signing
from assay.webhooks.events import EXAMPLES, Notification, body
from assay.webhooks.secret_box import SecretUnavailable, unseal
from assay.webhooks.store import (
    DELIVERED,
    FAILED,
    GAVE_UP,
    PENDING,
    Attempt,
    Due,
    WebhookStore,
)
from assay.webhooks.targets import TargetRefused, check_target, origin

log = logging.getLogger(__name__)

RETRY = "retry"
ERROR_MAX_CHARS = 1000
RESPONSE_MAX_CHARS = 1000
_RETRIED_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long deliveries are tried."""

    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("backoff_base_s", "backoff_max_s", "timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for field, variable, kind in (
            ("max_attempts", "ASSAY_WEBHOOK_MAX_ATTEMPTS", int),
            ("backoff_base_s", "ASSAY_WEBHOOK_BACKOFF_S", float),
            ("backoff_max_s", "ASSAY_WEBHOOK_BACKOFF_MAX_S", float),
            ("timeout_s", "ASSAY_WEBHOOK_TIMEOUT_S", float),
        ):
            raw = env.get(variable)
            if raw:
                try:
                    values[field] = kind(raw)
                except ValueError:
                    raise ValueError(f"${variable} must be a number, got {raw!r}") from None
        return cls(**values)

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (half to all of the
        exponential step: the jitter spreads receivers' retries apart)."""
        step = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempts - 1))
        return step * (0.5 + 0.5 * rng.random())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    result: str  # DELIVERED, RETRY or FAILED
    response_status: int | None
    error: str
    response_body: str


class WebhookSender:
    """Posts one signed attempt to a webhook URL, through the address-checking transport.

    Redirects are not followed and no proxy from the environment is used: the address that
    was checked is the address that is reached."""

    def __init__(self, timeout_s: float = 10.0, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=0)
        self._http = httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
            transport=checked_transport(limits),
        )
        self._timeout_s = timeout_s

    def close(self) -> None:
        self._http.close()

    def send(self, url: str, sealed_secret: str | None, delivery_id: str, payload: str) -> Outcome:
        """One attempt; never raises for what the network or the receiver does."""
        where = origin(url)
        try:
            check_target(url, self._environ)
        except TargetRefused as exc:
            return Outcome(FAILED, None, f"refused by the host policy: {exc}", "")
        secret: str | None = None
        try:
            secret = unseal(sealed_secret, self._environ) if sealed_secret else None
        except SecretUnavailable as exc:
            return Outcome(FAILED, None, f"not signed, not sent: {exc}", "")
        scrub = [secret, url]
        timestamp = str(int(time.time()))
        headers = signing.headers(delivery_id, timestamp, payload, secret)
        try:
            response = self._http.post(url, content=payload.encode("utf-8"), headers=headers)
        except ForbiddenAddressError as exc:
            return Outcome(FAILED, None, redact_then_cut(str(exc), ERROR_MAX_CHARS, scrub), "")
        except httpx.TimeoutException:
            return Outcome(RETRY, None, f"no answer from {where} within {self._timeout_s} s", "")
        except httpx.HTTPError as exc:
            text = f"{type(exc).__name__} reaching {where}: {exc}"
            return Outcome(RETRY, None, redact_then_cut(text, ERROR_MAX_CHARS, scrub), "")
        answer = redact_then_cut(response.text, RESPONSE_MAX_CHARS, scrub)
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(DELIVERED, status, "", answer)
        if status >= 500 or status in _RETRIED_STATUSES:
            return Outcome(RETRY, status, f"{where} answered {status}", answer)
        why = " (redirects are not followed)" if 300 <= status < 400 else ""
        return Outcome(FAILED, status, f"{where} answered {status}{why}", answer)


def _moment(registry: Registry) -> datetime:
    return registry._now()


class WebhookWorker:
    """Fans events out into deliveries and attempts those due, on a thread or step by step."""

    def __init__(
        self,
        registry: Registry,
        policy: RetryPolicy | None = None,
        poll_s: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.registry = registry
        self.store = WebhookStore(registry)
        self.policy = policy or RetryPolicy.from_env(env)
        self.poll_s = poll_s if poll_s is not None else float(env.get("ASSAY_WEBHOOK_POLL_S", 1))
        self._sender = WebhookSender(self.policy.timeout_s, environ)
        self._rng = random.Random()  # jitter only spreads retries in time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one step

    def run_once(self, limit: int = 20) -> int:
        """Fan out new events, then attempt the deliveries due now; how many were attempted."""
        self.store.fan_out()
        due = self.store.claim(limit, timedelta(seconds=self.policy.timeout_s + 30))
        for item in due:
            if self._stop.is_set():
                break
            self._attempt(item)
        return len(due)

    def _attempt(self, item: Due) -> None:
        number = item.attempts + 1
        started = _moment(self.registry)
        clock = time.monotonic()
        outcome = self._sender.send(item.url, item.sealed_secret, item.delivery_id, item.payload)
        duration_ms = round((time.monotonic() - clock) * 1000)
        state, when = outcome.result, None
        if outcome.result == RETRY:
            if number >= self.policy.max_attempts:
                state = GAVE_UP
            else:
                state = PENDING
                wait = self.policy.delay(number, self._rng)
                when = _moment(self.registry) + timedelta(seconds=wait)
        recorded = GAVE_UP if state == GAVE_UP else outcome.result
        attempt = Attempt(
            delivery_id=item.delivery_id,
            number=number,
            started_at=started,
            duration_ms=duration_ms,
            response_status=outcome.response_status,
            error=outcome.error,
            outcome=recorded,
        )
        self.store.record_attempt(item.delivery_id, attempt, state, when)
        level = logging.INFO if state == DELIVERED else logging.WARNING
        log.log(
            level,
            "webhook %s delivery %s attempt %d to %s: %s%s",
            item.webhook_id,
            item.delivery_id,
            number,
            origin(item.url),
            recorded,
            f" ({outcome.error})" if outcome.error else "",
        )

    # -- the thread

    def start(self) -> None:
        """Deliver on a background thread until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="assay-webhooks", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                attempted = self.run_once()
            except Exception:
                # A database hiccup must not end deliveries; the next round tries again.
                log.exception("webhook delivery round failed")
                attempted = 0
            if not attempted:
                self._stop.wait(self.poll_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread (an attempt under way finishes first) and close connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._sender.close()


def send_test(
    store: WebhookStore,
    webhook_id: str,
    event: str | None = None,
    timeout_s: float = 10.0,
    environ: Mapping[str, str] | None = None,
) -> Outcome:
    """MLflow's ``test``: one attempt of an example body for ``event`` (default: the
    webhook's first event), sent now, logged, not retried."""
    hook = store.get(webhook_id)
    name = event or hook.events[0]
    payload = body(Notification(name, dict(EXAMPLES[name])), _moment(store.registry))
    test_id = str(uuid.uuid4())
    sender = WebhookSender(timeout_s, environ)
    started = _moment(store.registry)
    clock = time.monotonic()
    try:
        outcome = sender.send(hook.url, store.sealed_secret(webhook_id), test_id, payload)
    finally:
        sender.close()
    attempt = Attempt(
        delivery_id=test_id,
        number=1,
        started_at=started,
        duration_ms=round((time.monotonic() - clock) * 1000),
        response_status=outcome.response_status,
        error=outcome.error,
        outcome=DELIVERED if outcome.result == DELIVERED else FAILED,
    )
    store.record_test(webhook_id, test_id, name, payload, attempt)
    return outcome
