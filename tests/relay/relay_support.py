"""Constants and helpers shared by the relay tests (imported by name: tests/relay is on sys.path)."""

import asyncio

UPSTREAM_KEYS = ["sk-or-v1-relay-test-key-one", "sk-or-v1-relay-test-key-two"]
CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hello relay"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def raw_exchange(port: int, data: bytes, wait_s: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port, return everything read until the server closes (or timeout)."""

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        try:
            async with asyncio.timeout(wait_s):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)
    finally:
        writer.close()


def status_of(raw: bytes) -> int:
    """Status code of the first HTTP response in `raw` (0 if there is none)."""
    parts = raw.split(b" ", 2)
    return int(parts[1]) if len(parts) > 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit() else 0


def provider_toml(name: str, base_url: str, **options: object) -> str:
    """A `[providers.NAME]` table using the test keys file, plus `options` (strings quoted, lists as TOML)."""
    lines = [f"[providers.{name}]", f'base_url = "{base_url}"', 'keys_file = "openrouter-keys"']
    for key, value in options.items():
        if isinstance(value, str):
            value = f'"{value}"'
        elif isinstance(value, list):
            value = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of Prometheus text (labels in the order the relay renders them); 0 if absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
