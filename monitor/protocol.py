"""The agent <-> dashboard protocol, version 1: message types, their fields and the limits
both sides share.

agent -> dashboard: hello {v, node}, events {batch: [event with seq]}, heartbeat {health},
                    policy_ack {version, error}
dashboard -> agent: welcome {node, last_seq, policy}, ack {seq, stored, duplicates, rejected},
                    policy {version, rules}, error {reason}

The dashboard checks every agent message with `check_message`; events inside a batch are
checked one by one (dashboard/events/schema.py), so one bad event never poisons its batch.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
AGENT_PATH = "/ws/agent/"
MAX_MESSAGE_BYTES = 4 << 20
MAX_BATCH = 1000
MAX_HEALTH_BYTES = 64 << 10
HEARTBEAT_SECONDS = 2.0

# type -> {field: required python type}; bool is never accepted where int is asked
MESSAGES = {
    "hello": {"v": int, "node": dict},
    "events": {"batch": list},
    "heartbeat": {"health": dict},
    "policy_ack": {"version": int, "error": str},
}
NODE_FIELDS = {"hostname": 255, "kernel": 255, "agent_version": 50}


class MessageError(ValueError):
    pass


def check_message(msg) -> str:
    """The message's type if it fits the schema; MessageError naming the fault otherwise."""
    if not isinstance(msg, dict):
        raise MessageError("a message must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in MESSAGES:
        raise MessageError(f"unknown message type {kind!r} (expected one of {', '.join(MESSAGES)})")
    for name, expected in MESSAGES[kind].items():
        value = msg.get(name)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise MessageError(f"{kind}.{name} must be {expected.__name__}")
    if kind == "hello":
        if msg["v"] != PROTOCOL_VERSION:
            raise MessageError(f"protocol version {msg['v']} is not spoken here (this dashboard speaks v1)")
        for name, limit in NODE_FIELDS.items():
            value = msg["node"].get(name, "")
            if not isinstance(value, str) or len(value) > limit:
                raise MessageError(f"hello.node.{name} must be a string of at most {limit} characters")
    if kind == "events" and not 0 < len(msg["batch"]) <= MAX_BATCH:
        raise MessageError(f"events.batch must hold 1 to {MAX_BATCH} events, not {len(msg['batch'])}")
    if kind == "policy_ack" and len(msg["error"]) > 2000:
        raise MessageError("policy_ack.error is longer than 2000 characters")
    return kind
