"""A ``ModelClient`` for any OpenAI-compatible HTTP endpoint (vLLM, TGI, llama.cpp, Ollama, ...).

Source URI: ``openai:http://host:port/v1#model-id``.

- ``GENERATE`` goes to ``/completions`` with the raw prompt, or to ``/chat/completions`` when
  ``serving.chat_template`` is set (the prompt is the user turn, ``serving.system_prompt`` the
  system turn). Greedy requests send ``temperature`` 0; a sampled request sends its
  ``temperature``, ``top_p`` and ``seed``. Reproducible samples need a server that honours
  ``seed`` (vLLM, llama.cpp's server and ``assay serve`` do; OpenAI's own API only tries, and
  TGI ignores it): against one that does not, a rerun from the request cache still gives the
  stored samples, but a cache miss draws new ones.
- ``LOGLIKELIHOOD`` sends ``prompt + continuation`` to ``/completions`` with ``echo=true`` and
  ``logprobs=1`` and sums the log-probabilities of the tokens that cover the continuation,
  located through the returned ``text_offset``. A token straddling the prompt/continuation
  boundary counts as a continuation token (it predicts continuation characters). An endpoint
  that does not return prompt log-probabilities gives an error, never a silent zero.

HTTP calls run on a bounded thread pool and are retried with exponential backoff and full
jitter on 429, 5xx, timeouts and connection errors. The API key is read from an environment
variable whose *name* is configured; it never appears in reprs, logs or error messages, and it
is sent only to the hosts the operator bound it to (``<NAME>_HOSTS``, see ``assay.core.security``).
Link-local and cloud metadata addresses are refused before any call.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.core.digests import digest_json
from assay.core.records import ChoiceScore, Completion, Request, RequestKind
from assay.core.security import (
    HOSTS_SUFFIX,
    ForbiddenAddressError,
    check_host_allowed,
    credential_may_go,
    credential_targets,
    redact,
    redact_then_cut,
)
from assay.models.base import ModelSpec, ProgressCallback
from assay.models.guarded_transport import checked_transport
from assay.models.rolling import is_rolling, refusal

log = logging.getLogger(__name__)

NO_PROMPT_LOGPROBS = "endpoint does not serve prompt log-probabilities"
# Fields of a /models entry that change between calls (vLLM stamps "created" per request).
_VOLATILE_MODEL_FIELDS = ("created", "permission")
# OpenAI accepts at most four stop sequences; the rest are applied here, after the fact.
_MAX_SERVER_STOPS = 4


class EndpointError(RuntimeError):
    """An HTTP call that failed for good (after retries, or not retryable)."""


@dataclass(frozen=True, slots=True)
class OpenAISource:
    """A parsed ``openai:`` source: where the endpoint is and which model it serves."""

    base_url: str  # e.g. http://127.0.0.1:8000/v1, possibly with user:password@
    model: str

    @classmethod
    def parse(cls, source: str) -> OpenAISource:
        scheme, _, rest = source.partition(":")
        if scheme != "openai":
            raise ValueError(f"model source {source!r} is not an 'openai:' source")
        url, sep, model = rest.partition("#")
        if not sep or not model:
            raise ValueError(
                f"model source {_redact_url(url)!r} names no model; expected "
                "'openai:http://host:port/v1#model-id'"
            )
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(
                f"model source {_redact_url(url)!r} needs an http(s) URL with a host, e.g. "
                "'openai:http://127.0.0.1:8000/v1#model-id'"
            )
        return cls(base_url=url.rstrip("/"), model=model)

    @property
    def public_url(self) -> str:
        """The base URL without credentials: safe for logs, errors and digests."""
        return _redact_url(self.base_url)


def endpoint_identity_digest(source: str) -> str:
    """A digest of an ``openai:`` source's credential-free URL and model id, offline."""
    parsed = OpenAISource.parse(source)
    return digest_json({"backend": "openai", "base_url": parsed.public_url, "model": parsed.model})


def _redact_url(url: str) -> str:
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except Exception:  # an unparsable URL is reported without its authority part
        return url.split("@")[-1]


@dataclass(frozen=True, slots=True)
class _Call:
    """One HTTP call; a log-likelihood request makes one per continuation."""

    request_index: int
    choice_index: int  # -1 for generation
    path: str
    body: dict[str, Any]


class OpenAIClient:
    """``ModelClient`` over an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 120.0,
        request_logprobs: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.spec = spec
        self.source = OpenAISource.parse(spec.source)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.request_logprobs = request_logprobs
        self._api_key_env = api_key_env
        url = httpx.URL(self.source.base_url)
        check_host_allowed(url.host, f"model source {self.source.public_url!r}")
        # Read once; an absent key is fine for local servers. Kept private and out of repr.
        self._api_key = os.environ.get(api_key_env) or None
        # The key travels only to the hosts the operator bound it to; anywhere else the
        # request goes without credentials (a registry user chooses the URL, not the key).
        # Scheme, host and port must all match: the same host over plain http, or on another
        # port, gets no key.
        self._key_sent = bool(self._api_key) and credential_may_go(
            url.scheme, url.host, url.port, credential_targets(api_key_env)
        )
        if self._api_key and not self._key_sent:
            log.warning(
                "$%s is not sent to %s: its scheme, host and port are not listed in $%s%s",
                api_key_env,
                self.source.public_url,
                api_key_env,
                HOSTS_SUFFIX,
            )
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._key_sent else {}
        limits = httpx.Limits(
            max_connections=max_concurrency, max_keepalive_connections=max_concurrency
        )
        self._http = httpx.Client(
            base_url=self.source.base_url + "/",
            headers=headers,
            timeout=timeout_s,
            limits=limits,
            # Each new connection's address is checked again (DNS rebinding).
            transport=transport or checked_transport(limits),
        )
        # Jitter only spreads retries in time; it never changes a result, so it need not be
        # derived from data.
        self._jitter = random.Random()
        self._digest: str | None = None
        self._digest_lock = threading.Lock()

    def __repr__(self) -> str:
        if not self._api_key:
            key = f"${self._api_key_env} unset"
        else:
            key = f"${self._api_key_env} {'sent' if self._key_sent else 'withheld'}"
        return (
            f"OpenAIClient(url={self.source.public_url!r}, model={self.source.model!r}, "
            f"key={key}, max_concurrency={self.max_concurrency})"
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- identity ---------------------------------------------------------------------------

    @property
    def backend_identity(self) -> dict[str, str]:
        """Backend kind; the server's software and version are not visible through the API
        (the artifact digest covers the URL, the model id and its ``/models`` entry)."""
        return {"kind": "openai"}

    @property
    def artifact_digest(self) -> str:
        """Digest of the credential-free base URL, the model id and its ``/models`` entry."""
        with self._digest_lock:
            if self._digest is None:
                self._digest = digest_json(
                    {
                        "backend": "openai",
                        "base_url": self.source.public_url,
                        "model": self.source.model,
                        "model_info": self._model_info(),
                    }
                )
            return self._digest

    def _model_info(self) -> dict[str, Any] | None:
        """The endpoint's ``/models`` entry for our model, without volatile fields."""
        try:
            listing = self._send("GET", "models", None)
        except EndpointError as exc:
            log.warning("could not list models at %s: %s", self.source.public_url, exc)
            return None
        for entry in listing.get("data") or []:
            if isinstance(entry, dict) and entry.get("id") == self.source.model:
                return {k: v for k, v in entry.items() if k not in _VOLATILE_MODEL_FIELDS}
        return None

    # -- requests ---------------------------------------------------------------------------

    def complete(
        self, requests: Sequence[Request], progress: ProgressCallback | None = None
    ) -> list[Completion]:
        """Run the requests concurrently (at most ``max_concurrency`` calls in flight)."""
        results: list[Completion | None] = [None] * len(requests)
        calls_by_request: dict[int, list[_Call]] = {}
        for i, request in enumerate(requests):
            try:
                calls = self._calls_for(i, request)
            except ValueError as exc:
                results[i] = Completion(error=str(exc))
                continue
            if not calls:
                results[i] = self._assemble(request, {}, 0.0)
                continue
            calls_by_request[i] = calls

        total = len(requests)
        done = total - len(calls_by_request)
        if progress is not None and done:
            progress(done, total)
        replies: dict[int, dict[int, dict[str, Any] | str]] = {i: {} for i in calls_by_request}
        latency: dict[int, float] = dict.fromkeys(calls_by_request, 0.0)
        with ThreadPoolExecutor(
            max_workers=self.max_concurrency, thread_name_prefix="assay-openai"
        ) as pool:
            futures = {
                pool.submit(self._timed_call, call): call
                for calls in calls_by_request.values()
                for call in calls
            }
            for future in as_completed(futures):
                call = futures[future]
                reply, seconds = future.result()
                replies[call.request_index][call.choice_index] = reply
                latency[call.request_index] += seconds
                if len(replies[call.request_index]) == len(calls_by_request[call.request_index]):
                    i = call.request_index
                    results[i] = self._assemble(requests[i], replies[i], latency[i])
                    done += 1
                    if progress is not None:
                        progress(done, total)
        return [r if r is not None else Completion(error="internal: no result") for r in results]

    def _calls_for(self, index: int, request: Request) -> list[_Call]:
        if is_rolling(request):
            raise ValueError(f"request {request.instance_id!r}: {refusal('OpenAI-compatible')}")
        model = self.source.model
        serving = self.spec.serving
        if request.kind is RequestKind.GENERATE:
            body: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens}
            if request.sampled:
                body["temperature"] = request.temperature
                body["top_p"] = request.top_p
                body["seed"] = request.seed
            else:
                body["temperature"] = 0
            if request.stop:
                body["stop"] = list(request.stop[:_MAX_SERVER_STOPS])
            if serving.chat_template:
                messages = []
                if serving.system_prompt:
                    messages.append({"role": "system", "content": serving.system_prompt})
                messages.append({"role": "user", "content": request.prompt})
                body["messages"] = messages
                if self.request_logprobs:
                    body["logprobs"] = True
                return [_Call(index, -1, "chat/completions", body)]
            body["prompt"] = request.prompt
            if self.request_logprobs:
                body["logprobs"] = 1
            return [_Call(index, -1, "completions", body)]

        if serving.chat_template:
            raise ValueError(
                "log-likelihood requests with serving.chat_template=true are not supported "
                "over an OpenAI endpoint: chat completions do not return prompt log-probabilities"
            )
        calls = []
        for j, continuation in enumerate(request.continuations):
            if not continuation:
                continue  # scored locally as zero tokens, log 1 = 0
            # max_tokens=1 rather than 0: several servers refuse 0; the generated token lies
            # past the echoed text and is ignored.
            body = {
                "model": model,
                "prompt": request.prompt + continuation,
                "max_tokens": 1,
                "temperature": 0,
                "echo": True,
                "logprobs": 1,
            }
            calls.append(_Call(index, j, "completions", body))
        return calls

    def _timed_call(self, call: _Call) -> tuple[dict[str, Any] | str, float]:
        """Send one call; failures come back as the error text instead of raising."""
        start = time.perf_counter()
        try:
            reply: dict[str, Any] | str = self._send("POST", call.path, call.body)
        except EndpointError as exc:
            reply = str(exc)
        except Exception as exc:  # one bad exchange must not lose the other requests
            reply = self._scrub(f"{call.path}: {type(exc).__name__}: {exc}")
        return reply, time.perf_counter() - start

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One HTTP exchange with retries; raises ``EndpointError`` with a safe message."""
        where = f"{method} {self.source.public_url}/{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                response = self._http.request(method, path, json=body)
            except ForbiddenAddressError as exc:  # never retried: the answer will not change
                raise EndpointError(self._scrub(f"{where}: {exc}")) from exc
            except httpx.TimeoutException as exc:
                last = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection error ({type(exc).__name__}: {exc})"
            else:
                status = response.status_code
                if status < 400:
                    try:
                        payload = response.json()
                    except (ValueError, RecursionError) as exc:
                        raise EndpointError(
                            self._scrub(f"{where}: HTTP {status} with a body that is not JSON")
                        ) from exc
                    if not isinstance(payload, dict):
                        raise EndpointError(f"{where}: HTTP {status} with a non-object JSON body")
                    return payload
                # Scrubbed before it is cut short: a cut first could leave part of a key.
                detail = redact_then_cut(_error_detail(response), 200, self._secrets)
                last = f"HTTP {status} {response.reason_phrase}: {detail}"
                if status != 429 and status < 500:
                    if status in (401, 403) and self._api_key and not self._key_sent:
                        last += (
                            f" (${self._api_key_env} was withheld from this host; list it in "
                            f"${self._api_key_env}{HOSTS_SUFFIX} to send it)"
                        )
                    raise EndpointError(self._scrub(f"{where} failed: {last}"))
                retry_after = _retry_after_s(response)
            if attempt == self.max_retries:
                break
            # Exponential backoff with full jitter; a server's Retry-After is a lower bound.
            delay = self._jitter.uniform(
                0.0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
            )
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.backoff_max_s))
            log.info(
                "%s: %s; retry %d/%d in %.2fs",
                where,
                self._scrub(last),
                attempt + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
        raise EndpointError(
            self._scrub(f"{where} failed after {self.max_retries + 1} attempt(s): {last}")
        )

    @property
    def _secrets(self) -> tuple[str, ...]:
        url = httpx.URL(self.source.base_url)
        return tuple(s for s in (self._api_key, url.password) if s)

    def _scrub(self, text: str) -> str:
        """Remove credentials from text that may echo them (a server may quote our headers)."""
        return redact(text, self._secrets)

    # -- responses --------------------------------------------------------------------------

    def _assemble(
        self, request: Request, replies: dict[int, dict[str, Any] | str], latency_s: float
    ) -> Completion:
        try:
            if request.kind is RequestKind.GENERATE:
                reply = replies[-1]
                if isinstance(reply, str):
                    return Completion(error=reply, latency_s=latency_s)
                completion = _parse_generation(reply, request.stop, self.spec.serving.chat_template)
            else:
                completion = self._parse_loglikelihood(request, replies)
        except ValueError as exc:
            return Completion(error=self._scrub(str(exc)), latency_s=latency_s)
        except (TypeError, AttributeError, KeyError, IndexError, RecursionError) as exc:
            # A reply shape the checks did not foresee fails this request only.
            reason = f"malformed endpoint reply ({type(exc).__name__}: {exc})"
            return Completion(error=self._scrub(reason), latency_s=latency_s)
        return _with_latency(completion, latency_s)

    def _parse_loglikelihood(
        self, request: Request, replies: dict[int, dict[str, Any] | str]
    ) -> Completion:
        choices = []
        errors = []
        prompt_tokens = 0
        for j, continuation in enumerate(request.continuations):
            if not continuation:
                choices.append(ChoiceScore(continuation, 0.0, 0, 0, 0, is_greedy=True))
                continue
            reply = replies[j]
            if isinstance(reply, str):
                errors.append(f"continuation {j}: {reply}")
                continue
            try:
                score, n_prompt = _score_continuation(reply, request.prompt, continuation)
            except ValueError as exc:
                errors.append(f"continuation {j}: {exc}")
                continue
            choices.append(score)
            prompt_tokens = prompt_tokens or n_prompt
        if errors:
            return Completion(error="; ".join(errors))
        return Completion(prompt_tokens=prompt_tokens, choices=tuple(choices))


def _with_latency(completion: Completion, latency_s: float) -> Completion:
    return Completion(
        text=completion.text,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        token_logprobs=completion.token_logprobs,
        choices=completion.choices,
        latency_s=latency_s,
        error=completion.error,
    )


class _Reply(BaseModel):
    """The parts of a reply the client reads; anything else in it is ignored."""

    model_config = ConfigDict(extra="ignore")


class _CompletionLogprobs(_Reply):
    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None
    text_offset: list[int] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None


class _ChatTokenLogprob(_Reply):
    token: str | None = None
    logprob: float | None = None


class _ChatLogprobs(_Reply):
    content: list[_ChatTokenLogprob] | None = None


class _Message(_Reply):
    content: str | None = None


class _CompletionChoice(_Reply):
    text: str | None = None
    logprobs: _CompletionLogprobs | None = None


class _ChatChoice(_Reply):
    message: _Message | None = None
    logprobs: _ChatLogprobs | None = None


class _Usage(_Reply):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _CompletionReply(_Reply):
    choices: list[_CompletionChoice] = Field(min_length=1)
    usage: _Usage | None = None


class _ChatReply(_Reply):
    choices: list[_ChatChoice] = Field(min_length=1)
    usage: _Usage | None = None


_R = TypeVar("_R", bound=_Reply)


def _validated(shape: type[_R], reply: dict[str, Any]) -> _R:
    """``reply`` checked against ``shape``; a ``ValueError`` saying where it is malformed."""
    try:
        return shape.model_validate(reply)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'reply'}: {err['msg']}"
            for err in exc.errors()[:3]
        ]
        raise ValueError(f"malformed endpoint reply: {'; '.join(problems)}") from None


def _parse_generation(reply: dict[str, Any], stop: Sequence[str], chat: bool) -> Completion:
    tokens: list[str] = []
    values: list[float | None] = []
    if chat:
        chat_reply = _validated(_ChatReply, reply)
        chat_choice, usage = chat_reply.choices[0], chat_reply.usage
        text = (chat_choice.message.content if chat_choice.message else None) or ""
        if chat_choice.logprobs is not None:
            for entry in chat_choice.logprobs.content or []:
                tokens.append(entry.token or "")
                values.append(entry.logprob)
    else:
        plain_reply = _validated(_CompletionReply, reply)
        choice, usage = plain_reply.choices[0], plain_reply.usage
        text = choice.text or ""
        if choice.logprobs is not None:
            tokens = list(choice.logprobs.tokens or [])
            values = list(choice.logprobs.token_logprobs or [])
    # Stops beyond the server's limit (or ignored by a lax server) are applied here.
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
        kept, length = 0, 0
        for token in tokens:
            if length + len(token) > cut:
                break
            length += len(token)
            kept += 1
        values = values[:kept]
    if any(v is None for v in values):
        values = []  # partial logprobs would misalign with tokens; report none
    usage = usage or _Usage()
    completion_tokens = usage.completion_tokens
    return Completion(
        text=text,
        prompt_tokens=int(usage.prompt_tokens or 0),
        completion_tokens=int(completion_tokens if completion_tokens is not None else len(values)),
        token_logprobs=tuple(float(v) for v in values if v is not None),
    )


def _score_continuation(
    reply: dict[str, Any], prompt: str, continuation: str
) -> tuple[ChoiceScore, int]:
    """Sum the echoed log-probabilities of the tokens covering ``continuation``.

    Returns the score and the number of tokens before the continuation.
    """
    choice = _validated(_CompletionReply, reply).choices[0]
    logprobs = choice.logprobs
    if logprobs is None:
        raise ValueError(f"{NO_PROMPT_LOGPROBS} (no 'logprobs' in the reply)")
    tokens = logprobs.tokens
    values = logprobs.token_logprobs
    offsets = logprobs.text_offset
    if not tokens or not values or not offsets:
        raise ValueError(f"{NO_PROMPT_LOGPROBS} (no tokens, token_logprobs or text_offset)")
    if not (len(tokens) == len(values) == len(offsets)):
        raise ValueError(
            "endpoint reply has tokens, token_logprobs and text_offset of unequal length"
        )
    full = prompt + continuation
    echoed = choice.text or ""
    if not echoed.startswith(full):
        raise ValueError(f"{NO_PROMPT_LOGPROBS} (the reply does not echo the prompt)")
    # Tokens at offset >= len(full) were generated, not echoed.
    n_echoed = sum(1 for off in offsets if off < len(full))
    if n_echoed == 0:
        raise ValueError(f"{NO_PROMPT_LOGPROBS} (no echoed tokens)")
    boundary = [i for i in range(n_echoed) if offsets[i] <= len(prompt)]
    if not boundary:
        raise ValueError("endpoint reply has text offsets that do not cover the prompt")
    # First continuation token: the last one starting at or before the boundary, so a token
    # straddling it counts towards the continuation.
    start = max(boundary)
    span = range(start, n_echoed)
    picked = [values[i] for i in span]
    if any(v is None for v in picked):
        raise ValueError(
            f"{NO_PROMPT_LOGPROBS} (no log-probability for a continuation token; "
            "an empty prompt leaves the first token unscored)"
        )
    top = logprobs.top_logprobs
    is_greedy = False
    if top is not None and len(top) >= n_echoed:
        is_greedy = all(_is_argmax(values[i], top[i]) for i in span)
    score = ChoiceScore(
        text=continuation,
        logprob=float(sum(v for v in picked if v is not None)),
        n_tokens=len(span),
        n_chars=len(continuation),
        n_bytes=len(continuation.encode("utf-8")),
        is_greedy=is_greedy,
    )
    return score, start


def _is_argmax(value: float | None, top: dict[str, float] | None) -> bool:
    if not top or value is None:
        return False
    best = max(top.values())
    # The served token may be absent from a top-1 list when another token wins.
    return float(value) >= best - 1e-6


# Enough of an error body to find the reason in; the caller scrubs it, then cuts it to size.
_ERROR_BODY_CHARS = 65_536


def _error_detail(response: httpx.Response) -> str:
    """The reason in an error body (OpenAI's ``error.message``, or the text), uncut."""
    text = response.text[:_ERROR_BODY_CHARS]
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return text.strip() or "(empty body)"
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if payload.get("detail"):
            return str(payload["detail"])
    return str(payload)


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; the exponential backoff is used instead
