"""The agent <-> dashboard protocol, version 1: message types and limits both sides share.

agent -> dashboard: hello {node}, events {batch: [event with seq]}, heartbeat {health},
                    policy_ack {version, error}
dashboard -> agent: welcome {node, last_seq, policy}, ack {seq, rejected}, policy {version, rules},
                    error {reason}
"""

PROTOCOL_VERSION = 1
AGENT_PATH = "/ws/agent/"
MAX_MESSAGE_BYTES = 4 << 20
MAX_BATCH = 1000
HEARTBEAT_SECONDS = 2.0
