"""`llm-relay keygen`: a new client token and this client's own envelope key, printed ready to paste.

The relay side needs only the token's `name:sha256hex` line (the server never stores a token) and the
client's key under the same name (`name:key`, the relay's client-keys file); the client side needs the
token itself and the same key. The key is 32 random bytes in Fernet's text form: envelope v2 derives its
AES-GCM keys from it, and a relay still on v1 accepts it as this client's Fernet key.
"""

from __future__ import annotations

import json

from llm_relay import envelope, tokens


def generate(name: str) -> dict[str, str]:
    token = tokens.generate_token()
    key = envelope.generate_key()
    return {
        "name": name,
        "token": token,
        "token_line": tokens.format_token_line(name, token),
        "fernet_key": key,
        "client_key_line": f"{name}:{key}",
    }


PLACEHOLDER_URL = "https://relay.example.org"


def render(keys: dict[str, str], fmt: str, profile: str, url: str = "") -> str:
    if fmt == "json":
        return json.dumps(keys, indent=2)
    if fmt == "env":
        return f"LLM_RELAY_TOKEN={keys['token']}\nLLM_RELAY_FERNET_KEY={keys['fernet_key']}\n"
    url_line = f'url = "{url}"' if url else f'url = "{PLACEHOLDER_URL}"  # change: your relay\'s public URL'
    return f"""\
# ---- relay side: merge into the inventory vault (role `relay`: relay_client_tokens) ----
# Only the token's SHA-256 goes there: the plain token never needs to leave this PC. `key` is this
# client's own envelope key (the relay's client-keys file); no other client's key opens its traffic.
relay_client_tokens:
  - name: {keys["name"]}
    sha256: {keys["token_line"].split(":", 1)[1]}
    key: "{keys["fernet_key"]}"
# by hand instead: the line for the server's client-tokens file and the one for its client-keys file (0600):
# {keys["token_line"]}
# {keys["client_key_line"]}

# ---- client side: paste into the client config (llm-relay doctor prints its path), chmod 600 ----
[profiles.{profile}]
{url_line}
token = "{keys["token"]}"
fernet_key = "{keys["fernet_key"]}"
encrypt = true
"""
