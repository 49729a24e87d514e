"""ASGI entry point: Django for HTTP, Channels for the browser feeds and the agents."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
django_asgi_app = get_asgi_application()  # set up Django before importing consumers

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from .routing import agent_urlpatterns, browser_urlpatterns  # noqa: E402


class WebsocketRouter:
    """Agents' path goes straight to its consumer; every other path is a browser's."""

    def __init__(self):
        self.agents = URLRouter(agent_urlpatterns)
        self.browsers = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(browser_urlpatterns)))

    async def __call__(self, scope, receive, send):
        app = self.agents if scope["path"].startswith("/ws/agent/") else self.browsers
        return await app(scope, receive, send)


application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": WebsocketRouter()})
