"""POST one signed callback (Standard Webhooks) and say what happened. Knows HTTP, not SQL."""

from __future__ import annotations

import email.utils
import ipaddress
import json
import re
import ssl
import time
from datetime import datetime

import orjson
from yarl import URL

from . import __version__, callback_urls
from .exceptions import CallbackFailed, CallbackRefused
from .http1 import Http1Client, Response
from .jobs import Job
from .outcome import AttemptResult
from .schedule import iso_utc
from .settings import Settings
from .signing import sign
from .ssrf import Resolver, refusal, system_resolver

USER_AGENT = f"reminderd/{__version__}"
CHECKED_URLS_MAX = 10_000
RETRYABLE_STATUS = frozenset({408, 429})


def callback_body(job: Job, scheduled_for: str | None = None) -> bytes:
    """The JSON body. The payload is inserted as the database stored it (already valid JSON);
    `scheduled_for` is iso_utc(job.scheduled_for), when the caller has it already.

    A message for a contact also says which contact, the zone it was timed in and why
    (`timezone_source`), and its broadcast if it has one; a broadcast's completion callback says
    `"event": "broadcast.completed"`. Other messages carry exactly the six original keys."""
    return (
        b'{"id":%d,"tenant_id":%s,"ref_id":%s,"scheduled_for":"%s","attempt":%d,%s"payload":%s}'
        % (
            job.id,
            _json_string(job.tenant_id),
            _json_string(job.ref_id),
            (scheduled_for or iso_utc(job.scheduled_for)).encode(),
            job.attempt,
            _audience_fields(job),
            job.payload_json.encode(),
        )
    )


def _json_string(text: str) -> bytes:
    try:
        return orjson.dumps(text)
    except TypeError:  # not encodable as UTF-8 (a lone surrogate): escaped as json.dumps does
        return json.dumps(text).encode()


def _audience_fields(job: Job) -> bytes:
    if job.contact_id is None:
        if job.broadcast_id is not None:  # job.completes_broadcast
            return b'"event":"broadcast.completed","broadcast_id":%d,' % job.broadcast_id
        return b""
    fields = b'"contact_id":%s,"timezone":%s,"timezone_source":%s,' % (
        _json_string(job.contact_id), _json_string(job.timing.timezone), _json_string(job.timezone_source))
    if job.broadcast_id is not None:
        fields += b'"broadcast_id":%d,' % job.broadcast_id
    return fields


def check_url(raw: str | None, allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> URL:
    """The callback URL, or CallbackRefused naming what is wrong with it: its address, then the
    rule the CLI, the API and SQL check when it is written (callback_urls), which a row written
    before that check (migrations 0019, 0039) or past it (an A-label IDNA refuses) may break.
    Only the host as written in ASCII (raw_host) is read: decoding an A-label (URL.host) raises on
    one punycode cannot decode (xn--zz)."""
    if not raw:
        raise CallbackRefused("no callback_url on the message and none on its tenant")
    try:
        url = URL(raw)
    except ValueError:
        wrong = callback_urls.problem(raw, international=True)
        raise CallbackRefused(f"callback_url {wrong}" if wrong else "callback_url is not a valid URL") from None
    host = url.raw_host
    if url.scheme not in {"http", "https"} or not host:
        raise CallbackRefused(f"callback_url must be an http(s) URL, not {url.scheme or 'schemeless'}")
    try:
        port = url.port
    except ValueError:
        raise CallbackRefused("callback_url has a port outside 1-65535") from None
    if not port:
        raise CallbackRefused("callback_url has a port outside 1-65535")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if _NUMERIC_HOST.match(host):
            # 2130706433, 127.1, 0x7f.1: inet_aton reads these as addresses, ip_address does not.
            raise CallbackRefused(
                f"callback_url host {host!r} is an address in a non-standard form"
            ) from None
        return _well_formed(url, raw)  # a name: checked on what it resolves to, at each connection (http1)
    reason = refusal(str(literal), allowed)
    if reason:
        raise CallbackRefused(reason)
    return _well_formed(url, raw)


def _well_formed(url: URL, raw: str) -> URL:
    wrong = callback_urls.problem(raw, international=True)
    if wrong:
        raise CallbackRefused(f"callback_url {wrong}")
    return url


def signature_header(job: Job, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """One signature, or one more space-separated for each rotated-out secret still in its grace
    period (two at most: rotate_secret), so receivers holding any of them verify (Standard Webhooks
    allows several)."""
    signature = sign(job.signing_secret, webhook_id, timestamp_s, body)
    for old in (job.previous_signing_secret, job.earlier_signing_secret):
        if old:
            signature += " " + sign(old, webhook_id, timestamp_s, body)
    return signature


_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*\.?$", re.IGNORECASE)


def _text(raw: str) -> str:
    """Text safe to store: no NUL (PostgreSQL text cannot hold it), no credentials in URLs."""
    return _CREDENTIALS.sub(r"\1***@", raw.replace("\x00", "\ufffd"))


_CREDENTIALS = re.compile(r"(://[^/@\s:]*:)[^/@\s]*@")


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


class CallbackClient:
    """Sends every callback through one pool of keep-alive connections (reminderd.http1).

    `resolver` and `ssl_context` are for tests: a fake DNS, a test CA.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._allowed = settings.allowed_callback_networks
        self._checked_urls: dict[str, URL] = {}  # most tenants use one URL: check it once
        self._occurrence: tuple[datetime | None, str] = (None, "")  # the last one formatted
        self._timeout_s = settings.callback_timeout_s
        self._http = Http1Client(
            self._allowed, resolver=resolver, ssl_context=ssl_context,
            headers=(("User-Agent", USER_AGENT), ("Content-Type", "application/json")),
        )

    async def close(self) -> None:
        await self._http.close()

    async def send(self, job: Job) -> AttemptResult:
        started = time.perf_counter()
        try:
            url = self._checked_url(job.callback_url)
            body = callback_body(job, self._scheduled_for(job.scheduled_for))
            try:
                headers = self._signed_headers(job, body)
            except ValueError as exc:  # a damaged signing secret: no retry can fix it
                return _poisoned(started, f"cannot sign for tenant {job.tenant_id}: {exc}")
            response = await self._http.post(url, body, headers, self._timeout_s)
        except CallbackRefused as refused:
            return _refused(started, str(refused))
        except TimeoutError:
            return self._failed(started, f"timed out after {self._timeout_s:g}s")
        except CallbackFailed as exc:
            return self._failed(started, _text(str(exc)))
        return _judged(response, started)

    def _checked_url(self, raw: str | None) -> URL:
        if raw and (known := self._checked_urls.get(raw)) is not None:
            return known
        url = check_url(raw, self._allowed)  # a refusal raises, so it is never cached
        if len(self._checked_urls) >= CHECKED_URLS_MAX:
            self._checked_urls.clear()
        self._checked_urls[str(raw)] = url
        return url

    def _scheduled_for(self, occurrence: datetime) -> str:
        """iso_utc(occurrence), formatted once for the many rows of a batch due at one instant."""
        last, text = self._occurrence
        if occurrence != last:
            text = iso_utc(occurrence)
            self._occurrence = (occurrence, text)
        return text

    @staticmethod
    def _signed_headers(job: Job, body: bytes) -> tuple[tuple[str, str], ...]:
        webhook_id = job.webhook_id
        timestamp_s = int(time.time())
        return (
            ("webhook-id", webhook_id),
            ("webhook-timestamp", str(timestamp_s)),
            ("webhook-signature", signature_header(job, webhook_id, timestamp_s, body)),
        )

    @staticmethod
    def _failed(started: float, error: str) -> AttemptResult:
        return AttemptResult(delivered=False, status_code=None, error=error, duration_ms=_elapsed_ms(started))


def _judged(response: Response, started: float) -> AttemptResult:
    """2xx delivered; 3xx, 408, 429 and 5xx retried; other 4xx permanent. With the body's excerpt."""
    status = response.status
    if 200 <= status < 300:
        return AttemptResult(True, status, None, _elapsed_ms(started))
    excerpt = _text(response.excerpt.decode("utf-8", "replace"))
    error = f"HTTP {status}" + (f": {' '.join(excerpt.split())[:200]}" if excerpt.strip() else "")
    if 300 <= status < 400:
        error += " (redirects are not followed: point the callback_url at the final address)"
    permanent = 400 <= status < 500 and status not in RETRYABLE_STATUS
    return AttemptResult(
        delivered=False, status_code=status, error=error, duration_ms=_elapsed_ms(started),
        permanent=permanent, retry_after_s=parse_retry_after(response.retry_after, time.time()),
    )


def _poisoned(started: float, error: str) -> AttemptResult:
    """The row can never be delivered as it stands: dead-letter it with the reason."""
    return AttemptResult(
        delivered=False, status_code=None, error=error, duration_ms=_elapsed_ms(started),
        permanent=True, poison=True,
    )


def _refused(started: float, reason: str) -> AttemptResult:
    """The callback address is not allowed: dead-letter the row with the reason."""
    return AttemptResult(
        delivered=False, status_code=None, error=f"refused: {reason}", duration_ms=_elapsed_ms(started),
        permanent=True, poison=True, refused=True,
    )


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
