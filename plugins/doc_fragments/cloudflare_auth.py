"""Shared connection and authentication options of the cloudflare_* modules."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_token:
    description:
      - Cloudflare API token (sent as a C(Bearer) C(Authorization) header). Needs
        C(Cloudflare Tunnel:Edit) on the account and C(DNS:Edit) on the zone for the modules that write them.
      - "The Access modules need C(Access: Apps and Policies:Edit) (applications, policies) and
        C(Access: Service Tokens:Edit) (service tokens, and reading them for a policy) on the account."
      - Never logged; prefer the environment variable or a vaulted variable over a literal.
      - The SDK's own C(CLOUDFLARE_API_KEY)/C(CLOUDFLARE_EMAIL) environment variables are ignored, so
        this token is the only credential sent.
      - Falls back to the E(CLOUDFLARE_API_TOKEN) environment variable.
    type: str
    required: false
  account_id:
    description:
      - Cloudflare account id (32 hex characters) owning the tunnels and Access objects.
      - Required by the tunnel and Access modules; optional for
        M(llm_relay.homelab.cloudflare_dns_record), where it narrows the zone lookup by name.
      - Falls back to the E(CLOUDFLARE_ACCOUNT_ID) environment variable.
    type: str
    required: false
  api_base_url:
    description:
      - Base URL of the Cloudflare API v4, up to and including C(/client/v4).
      - Point it at an emulator or a proxy; the lab sets C(https://127.0.0.1:8443/client/v4).
      - Falls back to the E(CLOUDFLARE_BASE_URL) environment variable.
    type: str
    default: https://api.cloudflare.com/client/v4
  ca_path:
    description:
      - PEM CA bundle used to verify the API's TLS certificate instead of the system store.
      - TLS verification cannot be turned off.
    type: path
  timeout:
    description:
      - Seconds to wait for each HTTP attempt (connect and read).
      - A call that keeps timing out fails after O(max_retries) + 1 attempts with a message saying so.
    type: float
    default: 30
  max_retries:
    description:
      - Retries per API call after HTTP 408, 429 (waiting what C(Retry-After) says, up to 60 s), 5xx,
        timeouts and connection errors, with exponential backoff (0.5 s doubling, at most 8 s).
      - HTTP 409 conflicts are not retried.
    type: int
    default: 2
requirements:
  - cloudflare >= 4.3 (the official Cloudflare Python SDK) on the host that runs the module
notes:
  - The modules talk HTTPS to O(api_base_url) from the host they run on; usually C(localhost) with
    a local connection, using an interpreter that has the C(cloudflare) package.
"""
