"""Reports progress once a second for params.seconds, then a result."""

import json
import sys
import time

seconds = json.load(sys.stdin)["seconds"]
started = time.time()
for done in range(seconds):
    left = seconds - done
    percent = round(100 * done / seconds, 1)
    print(
        json.dumps({"event": "progress", "message": f"{left} s left", "percent": percent}),
        flush=True,
    )
    time.sleep(1)
result = {"seconds": seconds, "elapsed": round(time.time() - started, 3)}
print(json.dumps({"event": "result", "data": result}), flush=True)
