"""Responses to HTTP/1.0 requests without the chunked coding HTTP/1.0 does not have.

uvicorn frames every response of unknown length (an event stream) with
``Transfer-Encoding: chunked``, whatever the request's version; an HTTP/1.0 client
then reads the chunk sizes as part of the body.  HTTP/1.0 ends such a body by closing
the connection (RFC 9112, section 6.3), which uvicorn already does after every
HTTP/1.0 response: here the body is written as it comes, unframed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent

_FRAMING_HEADERS = (b"content-length", b"transfer-encoding")


class CloseDelimitedCycle(RequestResponseCycle):
    """A request/response cycle whose response, without a length, ends at the close.

    uvicorn builds its cycles itself; the protocol swaps an HTTP/1.0 request's cycle
    to this class before the cycle's task first runs."""

    close_delimited = False  # the response being sent ends at the close

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            names = {name.lower() for name, _ in message.get("headers", [])}
            if not names & set(_FRAMING_HEADERS):
                self.chunked_encoding = False  # uvicorn would otherwise add chunked
                self.close_delimited = True
        elif message["type"] == "http.response.body" and self.close_delimited:
            # uvicorn checks a body against a length; this one is as long as it is.
            self.expected_content_length = len(message.get("body", b""))
        await super().send(message)


__all__ = ["CloseDelimitedCycle"]
