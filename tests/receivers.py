"""Real alert receivers on loopback for tests and benchmarks: an HTTP server (webhooks), syslog
listeners (UDP, and TCP with octet-counted framing), an SMTP server (aiosmtpd), and
Debian's Alertmanager started on a port of its own. Each records what it received with the
monotonic time it arrived, and can be stopped and started again on the same port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """POSTs received, as (arrived, path, json body); `delay` seconds before each answer;
    `status` for each, or `status_of(body)`."""

    def __init__(self, port: int | None = None, delay: float = 0.0, status: int = 200, status_of=None):
        self.port, self.delay, self.status = port or free_port(), delay, status
        self.status_of = status_of
        self.received: list[tuple[float, str, object]] = []
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Webhook:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.received.append((time.monotonic(), self.path, json.loads(body)))
                time.sleep(owner.delay)
                self.send_response(owner.status_of(json.loads(body)) if owner.status_of else owner.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bodies(self) -> list:
        return [body for _, _, body in self.received]


class Syslog:
    """RFC 5424 messages received over UDP, or TCP with RFC 6587 octet counting."""

    def __init__(self, transport: str = "udp"):
        self.transport = transport
        self.port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
        self.received: list[tuple[float, str]] = []
        self.sock = None

    @property
    def url(self) -> str:
        return f"{self.transport}://127.0.0.1:{self.port}"

    def start(self) -> Syslog:
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        if self.transport == "tcp":
            self.sock.listen()
        threading.Thread(target=self._serve, args=(self.sock,), daemon=True).start()
        return self

    def _serve(self, sock) -> None:
        try:
            while True:
                if self.transport == "udp":
                    data, _ = sock.recvfrom(65536)
                    self.received.append((time.monotonic(), data.decode()))
                else:
                    conn, _ = sock.accept()
                    threading.Thread(target=self._frames, args=(conn,), daemon=True).start()
        except OSError:
            return  # closed by stop()

    def _frames(self, conn) -> None:
        buffer = b""
        with conn:
            while chunk := conn.recv(65536):
                buffer += chunk
                while b" " in buffer:
                    length, rest = buffer.split(b" ", 1)
                    if len(rest) < int(length):
                        break
                    self.received.append((time.monotonic(), rest[: int(length)].decode()))
                    buffer = rest[int(length) :]

    def stop(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None

    def messages(self) -> list[str]:
        return [m for _, m in self.received]


class Smtp:
    """An SMTP server (aiosmtpd) keeping each message's envelope and body."""

    def __init__(self):
        self.port = free_port()
        self.received: list[tuple[float, list[str], str]] = []
        self.controller = None

    def start(self) -> Smtp:
        from aiosmtpd.controller import Controller

        owner = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                owner.received.append((time.monotonic(), list(envelope.rcpt_tos), envelope.content.decode()))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None


class Alertmanager:
    """Debian's prometheus-alertmanager on a loopback port, clustering off, in its own dir."""

    def __init__(self, directory: str):
        self.directory, self.port = directory, free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        config = os.path.join(self.directory, "alertmanager.yml")
        with open(config, "w") as fh:  # one receiver that sends nowhere: the test reads the API
            fh.write("route:\n  receiver: sink\nreceivers:\n  - name: sink\n")
        self.log = open(os.path.join(self.directory, "alertmanager.log"), "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={self.directory}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"alertmanager did not get ready: see {self.log.name}")

    def alerts(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
        self.log.close()
