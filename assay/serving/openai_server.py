"""An OpenAI-compatible HTTP server in front of any ``ModelClient``.

Endpoints: ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``.
Concurrent HTTP requests are gathered by a ``RequestBatcher`` into one ``complete()`` call,
which is what makes a local model worth serving. Decisions a caller should know:

- Generation is greedy when ``temperature`` is 0 or absent (unlike OpenAI's default of 1, so
  callers that never sent one keep their deterministic answers). With ``temperature`` > 0 it
  samples with ``top_p`` from the seed the caller sends (``seed``): the same request with the
  same seed gives the same text, batched with others or not; without a seed the server draws
  one at random. ``n`` must be 1 and ``stream`` false.
- ``echo=true`` with ``logprobs`` returns per-token prompt log-probabilities: exact model
  tokens when the client implements ``PromptScorer``, word pieces scored through the client's
  log-likelihood path otherwise (see ``assay.models.prompt_logprobs``). Generated tokens
  (``max_tokens > 0``) are appended to ``text`` but not listed in the echoed ``logprobs``.
- A ``ModelClient`` reports per-token log-probabilities of generated text without the token
  strings, so a generation's ``logprobs`` has ``token_logprobs`` and ``tokens: null``.
- Chat: one user message, optionally after one system message, which must equal the served
  model's configured system prompt (the client applies its own chat template and system
  turn; the server cannot substitute another). A client whose spec has no chat template is
  refused for chat requests.
- A request the model fails on answers 422 (retrying the same input will not help); a model
  client that raises answers 500.
- Limits, the Host and Origin allow-list, JSON-only bodies and the optional API key are
  described in ``assay.serving.policy``, the request timeout and connection cap in
  ``assay.core.http_server``; a request over a limit answers 400 (413 for the body size) and
  never reaches the model. A client that disconnects cancels its work still waiting for the
  model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from assay.core.digests import digest_json
from assay.core.http_rules import LOOPBACK_HOSTS, BodyError, parse_json_object
from assay.core.http_server import (
    BackgroundApp,
    ConnectionLimits,
    asgi_in_background,
    run_app,
)
from assay.core.records import Completion, Request, RequestKind
from assay.models.base import ModelClient
from assay.models.prompt_logprobs import (
    PromptLogprobs,
    PromptScorer,
    assemble_pieces,
    piece_requests,
    split_pieces,
)
from assay.serving.batcher import BatchStats, RequestBatcher
from assay.serving.policy import (
    CONNECTIONS_ENV_PREFIX,
    AccessGuard,
    ServerAccess,
    ServerLimits,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /completions
DEFAULT_CHAT_MAX_TOKENS = 256


class ApiError(Exception):
    """An error answered to the caller in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param

    def response(self) -> JSONResponse:
        body = {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}
        }
        return JSONResponse(body, status_code=self.status)


class OpenAIServer:
    """The ASGI app and the batcher serving one ``ModelClient`` under one model name."""

    def __init__(
        self,
        client: ModelClient,
        *,
        model_name: str | None = None,
        batch_window_s: float = 0.01,
        max_batch: int = 64,
        limits: ServerLimits | None = None,
        access: ServerAccess | None = None,
    ) -> None:
        spec = getattr(client, "spec", None)
        self.limits = limits if limits is not None else ServerLimits.from_env()
        self.access = access if access is not None else ServerAccess.from_env()
        self.client = client
        self.model_name = model_name or getattr(spec, "key", None) or "assay-model"
        serving = getattr(spec, "serving", None)
        self.chat_template: bool | None = getattr(serving, "chat_template", None)
        self.system_prompt: str | None = getattr(serving, "system_prompt", None)
        self.batcher = RequestBatcher(client, window_s=batch_window_s, max_batch=max_batch)
        self._digest: str | None = None
        routes = Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )
        self.app = AccessGuard(routes, self.access, self.limits)

    def close(self) -> None:
        self.batcher.close()

    # -- endpoints --------------------------------------------------------------------------

    async def _models(self, _: HttpRequest) -> JSONResponse:
        if self._digest is None:
            # Digesting weights may read a large file; keep the event loop free meanwhile.
            self._digest = await run_in_threadpool(lambda: self.client.artifact_digest)
        entry = {
            "id": self.model_name,
            "object": "model",
            "owned_by": "assay",
            "root": self.model_name,
            "artifact_digest": self._digest,
        }
        return JSONResponse({"object": "list", "data": [entry]})

    async def _completions(self, http: HttpRequest) -> JSONResponse:
        try:
            body = await _json_body(http, self.limits)
            self._check_common(body)
            prompts = _prompts(body, self.limits)
            max_tokens = _int_field(body, "max_tokens", DEFAULT_MAX_TOKENS, self.limits.max_tokens)
            stop = _stop(body, self.limits)
            echo = _bool_field(body, "echo", False)
            decoding = _decoding(body)
            logprobs = body.get("logprobs")
            if logprobs is not None and (
                isinstance(logprobs, bool)
                or not isinstance(logprobs, int)
                or not 0 <= logprobs <= 5
            ):
                raise ApiError(400, "'logprobs' must be an integer from 0 to 5", param="logprobs")
            if echo and logprobs is not None and not isinstance(self.client, PromptScorer):
                self._check_echo_cost(prompts)
            self._check_model_calls(prompts, max_tokens, echo, logprobs is not None)
            choices = await _unless_disconnected(
                http,
                asyncio.gather(
                    *(
                        self._one_completion(
                            p, max_tokens, stop, echo, logprobs is not None, decoding
                        )
                        for p in prompts
                    )
                ),
            )
        except ApiError as err:
            return err.response()
        except ClientGone:
            return JSONResponse({}, status_code=499)
        for i, choice in enumerate(choices):
            choice["index"] = i
        usage = {
            "prompt_tokens": sum(c.pop("_prompt_tokens") for c in choices),
            "completion_tokens": sum(c.pop("_completion_tokens") for c in choices),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse(
            {
                "id": "cmpl-" + digest_json([prompts, max_tokens, list(stop), echo])[:24],
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.model_name,
                "choices": choices,
                "usage": usage,
            }
        )

    async def _one_completion(
        self,
        prompt: str,
        max_tokens: int,
        stop: tuple[str, ...],
        echo: bool,
        want_logprobs: bool,
        decoding: dict[str, Any],
    ) -> dict[str, Any]:
        generated: Completion | None = None
        scored: PromptLogprobs | None = None
        waits = []
        if max_tokens > 0 or not echo:
            request = Request(
                "http", RequestKind.GENERATE, prompt, max_tokens=max_tokens, stop=stop, **decoding
            )
            waits.append(self._complete_one(request))
        if echo and want_logprobs:
            waits.append(self._score_prompt(prompt))
        results = await asyncio.gather(*waits)
        if max_tokens > 0 or not echo:
            generated = results[0]
        if echo and want_logprobs:
            scored = results[-1]

        text = generated.text if generated is not None else ""
        logprobs: dict[str, Any] | None = None
        if scored is not None:
            logprobs = scored.to_openai()
        elif want_logprobs and generated is not None:
            logprobs = {
                "tokens": None,
                "text_offset": None,
                "top_logprobs": None,
                "token_logprobs": list(generated.token_logprobs),
            }
        n_generated = generated.completion_tokens if generated is not None else 0
        if generated is not None and generated.prompt_tokens:
            n_prompt = generated.prompt_tokens
        else:
            n_prompt = len(scored.tokens) if scored is not None else 0
        return {
            "text": prompt + text if echo else text,
            "logprobs": logprobs,
            "finish_reason": "length" if max_tokens and n_generated >= max_tokens else "stop",
            "_prompt_tokens": n_prompt,
            "_completion_tokens": n_generated,
        }

    async def _chat(self, http: HttpRequest) -> JSONResponse:
        try:
            body = await _json_body(http, self.limits)
            self._check_common(body)
            prompt = self._chat_prompt(body.get("messages"))
            limit = self.limits.max_tokens
            default = _int_field(body, "max_completion_tokens", DEFAULT_CHAT_MAX_TOKENS, limit)
            max_tokens = _int_field(body, "max_tokens", min(default, limit), limit)
            stop = _stop(body, self.limits)
            want_logprobs = _bool_field(body, "logprobs", False)
            request = Request(
                "http",
                RequestKind.GENERATE,
                prompt,
                max_tokens=max_tokens,
                stop=stop,
                **_decoding(body),
            )
            completion = await _unless_disconnected(http, self._complete_one(request))
        except ApiError as err:
            return err.response()
        except ClientGone:
            return JSONResponse({}, status_code=499)
        logprobs = None
        if want_logprobs:
            logprobs = {
                "content": [
                    {"token": None, "logprob": v, "top_logprobs": []}
                    for v in completion.token_logprobs
                ]
            }
        finish = "length" if max_tokens and completion.completion_tokens >= max_tokens else "stop"
        usage = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        }
        return JSONResponse(
            {
                "id": "chatcmpl-" + digest_json([prompt, max_tokens, list(stop)])[:24],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": completion.text},
                        "logprobs": logprobs,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
        )

    # -- helpers ----------------------------------------------------------------------------

    def _check_common(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise ApiError(
                404,
                f"model {model!r} is not served here; this server serves {self.model_name!r}",
                kind="not_found_error",
                param="model",
            )
        if body.get("n", 1) != 1:
            raise ApiError(400, "only n=1 is supported", param="n")
        if body.get("stream"):
            raise ApiError(400, "streaming is not supported", param="stream")

    def _chat_prompt(self, messages: Any) -> str:
        if self.chat_template is False:
            raise ApiError(
                400,
                f"model {self.model_name!r} is served without a chat template; use /v1/completions",
            )
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list", param="messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise ApiError(
                    400, f"messages[{i}] needs a 'role' and a string 'content'", param="messages"
                )
            if len(m["content"]) > self.limits.max_prompt_chars:
                raise ApiError(
                    400,
                    f"messages[{i}].content is over {self.limits.max_prompt_chars} characters",
                    param="messages",
                )
        roles = [m.get("role") for m in messages]
        if roles not in (["user"], ["system", "user"]):
            raise ApiError(
                400,
                "only a single user message, optionally after one system "
                f"message, is supported; got roles {roles}",
                param="messages",
            )
        if roles[0] == "system" and messages[0]["content"] != (self.system_prompt or ""):
            raise ApiError(
                400,
                "the system message must equal the served model's configured system prompt",
                param="messages",
            )
        return messages[-1]["content"]

    def _check_model_calls(
        self, prompts: list[str], max_tokens: int, echo: bool, want_logprobs: bool
    ) -> None:
        # One call per generation; echo with logprobs scores each prompt in one call when the
        # client scores prompts exactly, and each word piece in a call of its own otherwise.
        generating = max_tokens > 0 or not echo
        calls = len(prompts) if generating else 0
        if echo and want_logprobs:
            if isinstance(self.client, PromptScorer):
                calls += len(prompts)
            else:
                calls += sum(max(len(split_pieces(text)) - 1, 0) for text in prompts)
        if calls > self.limits.max_model_calls:
            raise ApiError(
                400,
                f"this request would make {calls} model calls (echo with logprobs scores each "
                f"word piece of a prompt in a call of its own), over the limit of "
                f"{self.limits.max_model_calls} per request; send fewer or shorter prompts",
                param="prompt",
            )

    def _check_echo_cost(self, prompts: list[str]) -> None:
        # Word-piece scoring sends each piece with all the text before it: bound the total.
        cost = sum(
            offset + len(piece) for text in prompts for offset, piece in split_pieces(text)[1:]
        )
        if cost > self.limits.max_echo_chars:
            raise ApiError(
                400,
                f"echo with logprobs over these prompts would score {cost} characters of "
                f"word-piece context, over the limit of {self.limits.max_echo_chars}; "
                "send shorter prompts",
                param="prompt",
            )

    async def _complete_one(self, request: Request) -> Completion:
        try:
            completion = await asyncio.wrap_future(self.batcher.submit([request])[0])
        except Exception as exc:
            log.warning("model client raised: %s", exc)
            raise ApiError(500, f"model client failed: {exc}", kind="server_error") from exc
        if completion.error is not None:
            raise ApiError(422, f"model error: {completion.error}", kind="model_error")
        return completion

    async def _score_prompt(self, text: str) -> PromptLogprobs:
        try:
            if isinstance(self.client, PromptScorer):
                future = self.batcher.submit_prompt_scores([text])[0]
                return await asyncio.wrap_future(future)
            futures = self.batcher.submit(piece_requests(text))
            completions = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except Exception as exc:
            log.warning("model client raised: %s", exc)
            raise ApiError(500, f"model client failed: {exc}", kind="server_error") from exc
        try:
            return assemble_pieces(text, completions)
        except ValueError as exc:
            raise ApiError(422, f"model error: {exc}", kind="model_error") from exc


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready."""


async def _unless_disconnected(http: HttpRequest, work: Any) -> Any:
    """Await ``work`` unless the client disconnects first; then cancel it.

    Cancelling the awaited futures cancels the batcher's jobs still queued, so the model never
    runs them and the next caller does not wait behind abandoned work.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(http))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    log.info("client disconnected; its pending work was cancelled")
    raise ClientGone


async def _disconnected(http: HttpRequest) -> None:
    # The body has been read, so the next message the server hands over is the disconnect.
    while (await http.receive())["type"] != "http.disconnect":
        pass


async def _json_body(http: HttpRequest, limits: ServerLimits) -> dict[str, Any]:
    chunks, size = [], 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
        chunks.append(chunk)
    try:
        return parse_json_object(b"".join(chunks), limits.max_json_depth)
    except BodyError as exc:
        raise ApiError(400, str(exc)) from None


def _prompts(body: dict[str, Any], limits: ServerLimits) -> list[str]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = prompt
    else:
        raise ApiError(
            400,
            "'prompt' must be a string or a non-empty list of strings "
            "(token ids are not supported)",
            param="prompt",
        )
    if len(prompts) > limits.max_prompts:
        raise ApiError(
            400,
            f"at most {limits.max_prompts} prompts per request, got {len(prompts)}",
            param="prompt",
        )
    for i, text in enumerate(prompts):
        if len(text) > limits.max_prompt_chars:
            raise ApiError(
                400,
                f"prompt {i} has {len(text)} characters, over the limit of "
                f"{limits.max_prompt_chars}",
                param="prompt",
            )
    return prompts


def _int_field(body: dict[str, Any], name: str, default: int, limit: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError(400, f"{name!r} must be a non-negative integer, got {value!r}", param=name)
    if value > limit:
        raise ApiError(400, f"{name!r} is over this server's limit of {limit}", param=name)
    return value


def _number_field(
    body: dict[str, Any], name: str, default: float, low: float, high: float
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiError(
            400, f"{name!r} must be a number in [{low}, {high}], got {value!r}", param=name
        )
    return float(value)


def _decoding(body: dict[str, Any]) -> dict[str, Any]:
    """The ``Request`` decoding fields of a body: greedy unless ``temperature`` > 0."""
    temperature = _number_field(body, "temperature", 0.0, 0.0, 2.0)
    top_p = _number_field(body, "top_p", 1.0, 0.0, 1.0)
    if temperature == 0:
        return {}
    if top_p == 0:
        raise ApiError(400, "'top_p' must be above 0 when sampling", param="top_p")
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)  # OpenAI's behaviour: no seed, no reproducibility
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ApiError(400, f"'seed' must be a non-negative integer, got {seed!r}", param="seed")
    return {"temperature": temperature, "top_p": top_p, "seed": seed}


def _bool_field(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name!r} must be true or false, got {value!r}", param=name)
    return value


def _stop(body: dict[str, Any], limits: ServerLimits) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stops: tuple[str, ...] = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop):
        stops = tuple(stop)
    else:
        raise ApiError(400, "'stop' must be a string or a list of non-empty strings", param="stop")
    if len(stops) > limits.max_stops or any(len(s) > limits.max_prompt_chars for s in stops):
        raise ApiError(
            400,
            f"at most {limits.max_stops} stop sequences of at most "
            f"{limits.max_prompt_chars} characters",
            param="stop",
        )
    return stops


# -- running it -----------------------------------------------------------------------------


def serve(
    client: ModelClient,
    host: str = "127.0.0.1",
    port: int = 8000,
    connection_limits: ConnectionLimits | None = None,
    **options: Any,
) -> None:
    """Serve ``client`` until interrupted (``options`` go to ``OpenAIServer``; connection
    limits default to ``ASSAY_SERVE_REQUEST_TIMEOUT_S`` and ``ASSAY_SERVE_MAX_CONNECTIONS``)."""
    server = OpenAIServer(client, **options)
    if server.access.api_key is None and host not in LOOPBACK_HOSTS:
        log.warning(
            "serving on %s without an API key: anyone who can reach the port can use the model "
            "(set $ASSAY_SERVE_API_KEY)",
            host,
        )
    if connection_limits is None:
        connection_limits = ConnectionLimits.from_env(CONNECTIONS_ENV_PREFIX)
    try:
        run_app(server.app, host, port, connection_limits)
    finally:
        server.close()


@dataclass
class RunningServer:
    """An ``OpenAIServer`` running on a background thread (see ``serving_in_background``)."""

    server: OpenAIServer
    app: BackgroundApp

    @property
    def base_url(self) -> str:
        return self.app.base_url

    @property
    def port(self) -> int:
        return self.app.port

    @property
    def stats(self) -> BatchStats:
        return self.server.batcher.stats

    def stop(self, force: bool = False) -> None:
        self.app.stop(force)


@contextlib.contextmanager
def serving_in_background(
    client: ModelClient | OpenAIServer,
    host: str = "127.0.0.1",
    port: int = 0,
    connection_limits: ConnectionLimits | None = None,
    **options: Any,
) -> Iterator[RunningServer]:
    """Serve on a background thread; ``port=0`` picks a free port.

    Given a ``ModelClient``, a new ``OpenAIServer`` is made and closed on exit; given an
    ``OpenAIServer`` (e.g. to start it again after a stop), it is left open.
    """
    owned = not isinstance(client, OpenAIServer)
    server = OpenAIServer(client, **options) if owned else client
    try:
        with asgi_in_background(server.app, host, port, connection_limits) as app:
            yield RunningServer(server, app)
    finally:
        if owned:
            server.close()
