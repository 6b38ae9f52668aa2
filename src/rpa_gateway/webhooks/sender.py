"""One attempt of one delivery over HTTP: its own pooled client (deliveries never wait on
the platform's connections, nor it on theirs), no redirects followed, the reply read up to
a bound, every connection made only to an address the guard let through."""

from __future__ import annotations

import time

import aiohttp
from aiohttp.resolver import DefaultResolver

from rpa_gateway.webhooks.addresses import GuardedResolver, describe, literal_refused
from rpa_gateway.webhooks.model import Attempt

RESPONSE_KEPT = 1024  # bytes of a reply a delivery records
_RESPONSE_READ = 64 * 1024  # bytes read at most before the connection is dropped


class Sender:
    def __init__(
        self, *, timeout: float, allow_private: bool, user_agent: str, max_connections: int
    ) -> None:
        self._user_agent = user_agent
        self._allow_private = allow_private
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=max_connections,
                resolver=GuardedResolver(DefaultResolver(), allow_private),
                use_dns_cache=False,  # resolved (and checked) at each new connection
            ),
            timeout=aiohttp.ClientTimeout(total=timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        began = time.monotonic()
        refused = literal_refused(url, self._allow_private)
        if refused is not None:
            return Attempt(None, 0.0, error=refused)
        request_headers = {
            **headers,
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
        }
        try:
            async with self._session.post(
                url, data=body, headers=request_headers, allow_redirects=False
            ) as reply:
                head = await reply.content.read(_RESPONSE_READ)
                return Attempt(
                    reply.status,
                    _ms(began),
                    response=head[:RESPONSE_KEPT].decode("utf-8", "replace"),
                )
        except TimeoutError:
            return Attempt(None, _ms(began), error="timed out")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt(None, _ms(began), error=describe(exc)[:300])

    async def aclose(self) -> None:
        await self._session.close()


def _ms(began: float) -> float:
    return round((time.monotonic() - began) * 1000, 1)
