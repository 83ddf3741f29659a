"""The shop's api service: a small catalogue over HTTP, Python standard library only.

GET /health -> 200 "ok"; GET /items -> {"instance": "<hostname>-<pid>", "items": [...]}.
Port 8080 (PORT overrides), on every address. One log line per request, flushed, on stdout.
"""
import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8080"))
INSTANCE = f"{socket.gethostname()}-{os.getpid()}"
ITEMS = [
    {"id": 1, "name": "teapot", "price": 18.0},
    {"id": 2, "name": "mug", "price": 6.5},
    {"id": 3, "name": "kettle", "price": 32.0},
]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self.answer(200, "text/plain", b"ok\n")
        elif self.path == "/items":
            body = json.dumps({"instance": INSTANCE, "items": ITEMS}).encode()
            self.answer(200, "application/json", body)
        else:
            self.answer(404, "text/plain", b"not found\n")

    def answer(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        # one line per request on stdout (the default writes to stderr), flushed so `appswitch logs` sees it at once
        print(f"{INSTANCE} {self.client_address[0]} {fmt % args}", flush=True)


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    # SIGTERM (appswitch stop/down) ends it like Ctrl-C: a clean exit, code 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"api listening on :{PORT} ({INSTANCE})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"api stopping ({INSTANCE})", flush=True)
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
