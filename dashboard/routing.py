from django.urls import path

from dashboard.events.consumers import FeedConsumer
from dashboard.fleet.consumers import AgentConsumer

# Browsers: session auth and Origin checks (wrapped in asgi.py).
browser_urlpatterns = [path("ws/feed/<str:feed>/", FeedConsumer.as_asgi())]
# Agents: token auth in the consumer; they send no Origin.
agent_urlpatterns = [path("ws/agent/", AgentConsumer.as_asgi())]
