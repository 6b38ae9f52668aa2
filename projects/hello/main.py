"""Greets params.name and returns the params it got."""

import json
import sys

params = json.load(sys.stdin)
name = params.get("name") or "world"
print(f"greeting {name}")
print(json.dumps({"event": "result", "data": {"greeting": f"Hello, {name}!", "params": params}}))
