"""One attempt of one delivery over HTTP: its own connections (deliveries never wait on
the platform's, nor it on theirs), no redirects followed, the reply read up to a bound,
every connection made only to an address the guard let through."""

from __future__ import annotations

import asyncio
import ssl
import time

from aiohttp.resolver import DefaultResolver

from rpa_gateway.http_client import HttpClient
from rpa_gateway.webhooks.addresses import GuardedResolver, describe, literal_refused
from rpa_gateway.webhooks.model import Attempt

RESPONSE_KEPT = 1024  # bytes of a reply a delivery records
_RESPONSE_READ = 64 * 1024  # bytes read at most before the connection is dropped
_URLS_KEPT = 10_000


class Sender:
    def __init__(
        self,
        *,
        timeout: float,
        allow_private: bool,
        user_agent: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout
        self._allow_private = allow_private
        self._refusals: dict[str, str | None] = {}  # by URL: literal_refused's answer
        self._headers = {"Content-Type": "application/json", "User-Agent": user_agent}
        self._client = HttpClient(
            GuardedResolver(DefaultResolver(), allow_private), ssl_context=ssl_context
        )

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        began = time.monotonic()
        if url not in self._refusals:
            if len(self._refusals) >= _URLS_KEPT:
                self._refusals.clear()
            self._refusals[url] = literal_refused(url, self._allow_private)
        refused = self._refusals[url]
        if refused is not None:
            return Attempt(None, 0.0, error=refused)
        try:
            async with asyncio.timeout(self._timeout):
                status, head = await self._client.post(
                    url, {**self._headers, **headers}, body, read_limit=_RESPONSE_READ
                )
        except TimeoutError:
            return Attempt(None, _ms(began), error="timed out")
        except (OSError, ValueError) as exc:
            return Attempt(None, _ms(began), error=describe(exc)[:300])
        except Exception as exc:  # whatever an endpoint does is its own failure
            return Attempt(None, _ms(began), error=f"{type(exc).__name__}: {exc}"[:300])
        return Attempt(status, _ms(began), response=head[:RESPONSE_KEPT].decode("utf-8", "replace"))

    async def aclose(self) -> None:
        await self._client.aclose()


def _ms(began: float) -> float:
    return round((time.monotonic() - began) * 1000, 1)
