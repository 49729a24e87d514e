"""CrossEdge node agent: runs kernel backends, attributes and judges their events."""

AGENT_VERSION = "0.1.0"
