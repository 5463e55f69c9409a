"""Constants and helpers shared by the relay tests (imported by name: tests/relay is on sys.path)."""

UPSTREAM_KEYS = ["sk-or-v1-relay-test-key-one", "sk-or-v1-relay-test-key-two"]
CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hello relay"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
