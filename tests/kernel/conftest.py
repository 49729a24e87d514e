import pytest

from monitor.testbed import listen


@pytest.fixture
def v6_listener():
    """A listener on [::1] that accepts and closes; yields its port."""
    sock = listen("::1", 0)
    yield sock.getsockname()[1]
    sock.close()
