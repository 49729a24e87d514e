import socket
import threading

import pytest


@pytest.fixture
def v6_listener():
    """A listener on [::1] that accepts and closes; yields its port."""
    sock = socket.create_server(("::1", 0), family=socket.AF_INET6)
    port = sock.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield port
    sock.close()
