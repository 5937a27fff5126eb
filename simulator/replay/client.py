"""Streaming client for OpenAI-compatible completion endpoints (the profiler's and the replay's).

`stream_completion` sends one ``POST {endpoint}/v1/completions`` with ``stream: true`` and
``stream_options.include_usage`` and times it on the caller's clock: when it was sent, when
the first non-empty token chunk arrived, when the last did, and how many chunks and tokens
came. Every failure is an `EndpointError` whose message names the URL and the problem:
connection refused, timeout, an HTTP status (with the start of the body), a line that is not
a server-sent event, a chunk that is not JSON or lacks ``choices``/``text``, an error object
in the stream, or a stream that ends without ``data: [DONE]``.

`fetch_models` reads ``GET {endpoint}/v1/models`` (the model id to send, and the engine's
limits where the server reports them, as the reference server does).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


class EndpointError(RuntimeError):
    """A request to an inference endpoint failed; the message names the URL and the problem."""


@dataclass
class StreamResult:
    """One streamed completion, times in seconds on the caller's clock (NaN when absent).

    sent_s: just before the request was written; first_token_s / last_token_s: arrival of
    the first and last chunk carrying text; chunks: text-carrying chunks; completion_tokens:
    the usage count when the server sent one, else the chunk count."""

    sent_s: float
    first_token_s: float = math.nan
    last_token_s: float = math.nan
    finish_s: float = math.nan
    chunks: int = 0
    completion_tokens: int = 0
    prompt_tokens: int | None = None

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.sent_s

    @property
    def e2e_s(self) -> float:
        return self.finish_s - self.sent_s

    @property
    def itl_s(self) -> float:
        """Mean gap between tokens after the first (NaN for one token)."""
        n = self.completion_tokens
        if n < 2 or not math.isfinite(self.last_token_s):
            return math.nan
        return (self.last_token_s - self.first_token_s) / (n - 1)


def normalize_endpoint(url: str) -> str:
    """Base URL without a trailing slash or a trailing /v1 (both spellings are accepted)."""
    u = url.strip().rstrip("/")
    if not u.startswith(("http://", "https://")):
        raise ValueError(f"endpoint must start with http:// or https://, got {url!r}")
    if u.endswith("/v1"):
        u = u[:-3]
    return u


def _describe(e: httpx.HTTPError) -> str:
    if isinstance(e, httpx.ConnectError):
        return f"cannot connect ({e or 'connection refused'})"
    if isinstance(e, httpx.TimeoutException):
        return f"timed out ({type(e).__name__})"
    if isinstance(e, httpx.RemoteProtocolError):
        return f"the server broke the HTTP protocol ({e})"
    return f"{type(e).__name__}: {e}"


async def fetch_models(client: httpx.AsyncClient, endpoint: str) -> list[dict[str, Any]] | None:
    """The endpoint's /v1/models entries; None when it has no such route (HTTP 404/405).

    Raises EndpointError for connection failures, other HTTP errors and malformed JSON."""
    url = f"{endpoint}/v1/models"
    try:
        resp = await client.get(url)
    except httpx.HTTPError as e:
        raise EndpointError(f"{url}: {_describe(e)}") from e
    if resp.status_code in (404, 405):
        return None
    if resp.status_code != 200:
        raise EndpointError(f"{url}: HTTP {resp.status_code}: {resp.text[:200]!r}")
    try:
        body = resp.json()
    except json.JSONDecodeError as e:
        raise EndpointError(f"{url}: response is not JSON: {resp.text[:200]!r}") from e
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and "id" in m for m in data):
        raise EndpointError(f"{url}: expected {{'data': [{{'id': ...}}, ...]}}, got {body!r:.200}")
    return data


async def stream_completion(
    client: httpx.AsyncClient,
    endpoint: str,
    payload: dict[str, Any],
    clock: Callable[[], float] = time.perf_counter,
) -> StreamResult:
    """Send one streaming completion and time it (module docstring). Raises EndpointError."""
    url = f"{endpoint}/v1/completions"
    body = {**payload, "stream": True, "stream_options": {"include_usage": True}}
    res = StreamResult(sent_s=clock())
    usage_tokens: int | None = None
    done = False
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread())[:300].decode("utf-8", "replace")
                raise EndpointError(f"{url}: HTTP {resp.status_code}: {text!r}")
            async for line in resp.aiter_lines():
                if not line or line.startswith(":"):
                    continue  # keep-alive comments and event separators
                if not line.startswith("data:"):
                    raise EndpointError(
                        f"{url}: malformed stream: expected a 'data:' server-sent event line, "
                        f"got {line[:120]!r}"
                    )
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                try:
                    obj = json.loads(data)
                except json.JSONDecodeError:
                    raise EndpointError(
                        f"{url}: malformed stream: chunk is not JSON: {data[:120]!r}"
                    ) from None
                if not isinstance(obj, dict):
                    raise EndpointError(
                        f"{url}: malformed stream: chunk is not an object: {data[:120]!r}"
                    )
                if "error" in obj:
                    raise EndpointError(f"{url}: error in stream: {obj['error']!r:.300}")
                choices = obj.get("choices")
                if not isinstance(choices, list):
                    raise EndpointError(
                        f"{url}: malformed stream: chunk has no 'choices' list: {data[:160]!r}"
                    )
                usage = obj.get("usage")
                if isinstance(usage, dict):
                    ct = usage.get("completion_tokens")
                    if isinstance(ct, int):
                        usage_tokens = ct
                    pt = usage.get("prompt_tokens")
                    if isinstance(pt, int):
                        res.prompt_tokens = pt
                for ch in choices:
                    if not isinstance(ch, dict) or "text" not in ch:
                        raise EndpointError(
                            f"{url}: malformed stream: choice has no 'text': {data[:160]!r}"
                        )
                    if ch["text"]:
                        t = clock()
                        if res.chunks == 0:
                            res.first_token_s = t
                        res.last_token_s = t
                        res.chunks += 1
    except httpx.HTTPError as e:
        raise EndpointError(f"{url}: {_describe(e)}") from e
    res.finish_s = clock()
    if not done:
        raise EndpointError(f"{url}: malformed stream: it ended without 'data: [DONE]'")
    if res.chunks == 0:
        raise EndpointError(f"{url}: the stream carried no tokens")
    res.completion_tokens = usage_tokens if usage_tokens is not None else res.chunks
    return res


def make_client(timeout_s: float = 600.0, max_connections: int | None = None) -> httpx.AsyncClient:
    """An AsyncClient with no pool cap by default: an open-loop sender must never wait for a
    pooled connection (httpx's default of 100 would turn the replay closed-loop)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=None)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)), limits=limits
    )


__all__ = [
    "EndpointError",
    "StreamResult",
    "fetch_models",
    "make_client",
    "normalize_endpoint",
    "stream_completion",
]
