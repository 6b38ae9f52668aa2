"""Fetches params.url and reports the HTTP status, the page title and its size."""

import json
import sys
import urllib.error
import urllib.request
from html.parser import HTMLParser


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
    with urllib.request.urlopen(url, timeout=params.get("timeout", 10)) as response:  # noqa: S310
        status = response.status
        body = response.read(5_000_000)
        content_type = response.headers.get("Content-Type", "")
except urllib.error.HTTPError as error:
    status, body, content_type = error.code, error.read(), error.headers.get("Content-Type", "")
except (urllib.error.URLError, OSError) as error:
    print(f"cannot fetch {url}: {error}", file=sys.stderr)
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
