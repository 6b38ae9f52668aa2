"""Fetches params.url and reports the HTTP status, the page title and its size.

Only public addresses are fetched: a URL whose host resolves to a loopback,
private, link-local (cloud metadata included), shared or reserved address is
refused - checked on the address actually connected to, on every redirect too,
so neither a redirect nor a DNS answer that changes between check and connect
reaches an internal service.  PAGE_TITLE_ALLOW_HOSTS (hosts as written in URLs,
comma-separated, or ``*``) lets named hosts through anyway.
"""

import http.client
import ipaddress
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urlsplit

ALLOWED_HOSTS = {
    host.strip().lower()
    for host in os.environ.get("PAGE_TITLE_ALLOW_HOSTS", "").split(",")
    if host.strip()
}


class Refused(OSError):
    """The URL's host is not a public address."""


# IPv6 unicast is 2000::/3; within it, these carry or reach IPv4 (or document examples).
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NOT_PUBLIC_V6 = [
    ipaddress.ip_network(n) for n in ("2002::/16", "2001::/32", "2001:db8::/32", "2001:10::/28")
]


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip not in _GLOBAL_UNICAST or any(ip in net for net in _NOT_PUBLIC_V6):
            return False  # NAT64, IPv4-compatible, 6to4, Teredo, site-local, ...
    return ip.is_global and not ip.is_multicast


def connect_checked(host: str, port: int, timeout: float | None) -> socket.socket:
    """A connection to the first public address of ``host`` (any, if the host is allowed)."""
    allowed = "*" in ALLOWED_HOSTS or host.lower() in ALLOWED_HOSTS
    refused: list[str] = []
    last_error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if not allowed and not is_public(address[0]):
            refused.append(address[0])
            continue
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as error:
            sock.close()
            last_error = error
            continue
        return sock
    if refused:
        raise Refused(
            f"refused: {host} resolves to {', '.join(sorted(set(refused)))}, not a public"
            " address (PAGE_TITLE_ALLOW_HOSTS lets named hosts through)"
        )
    raise last_error or OSError(f"no address for {host}")


class CheckedHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = connect_checked(self.host, self.port, self.timeout)


class CheckedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        sock = connect_checked(self.host, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class CheckedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(CheckedHTTPConnection, req)


class CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(CheckedHTTPSConnection, req)


class SameSchemesRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise Refused(f"refused: a redirect to {newurl[:100]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# No proxies from the environment: every connection is one that was checked.
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),
    CheckedHTTPHandler,
    CheckedHTTPSHandler,
    SameSchemesRedirects,
)


class TitleParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self._inside = False

    def handle_starttag(self, tag, attrs):
        self._inside = tag == "title" and not self.title

    def handle_endtag(self, tag):
        self._inside = False

    def handle_data(self, data):
        if self._inside:
            self.title += data


params = json.load(sys.stdin)
url = params["url"]
print(json.dumps({"event": "progress", "message": f"fetching {url}", "percent": 0}), flush=True)
try:
    with opener.open(url, timeout=params.get("timeout", 10)) as response:
        status = response.status
        body = response.read(5_000_000)
        content_type = response.headers.get("Content-Type", "")
except urllib.error.HTTPError as error:
    status, body, content_type = error.code, error.read(), error.headers.get("Content-Type", "")
except (urllib.error.URLError, OSError) as error:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    print(f"cannot fetch {url}: {reason}", file=sys.stderr)
    sys.exit(2)

parser = TitleParser()
parser.feed(body.decode("utf-8", "replace"))
print(json.dumps({"event": "progress", "message": "parsed", "percent": 100}), flush=True)
result = {
    "url": url,
    "status": status,
    "title": " ".join(parser.title.split()),
    "bytes": len(body),
    "content_type": content_type,
}
print(json.dumps({"event": "result", "data": result}), flush=True)
