# Shared documentation of the Proxmox VE connection options (plugins/module_utils/proxmox.py
# proxmox_auth_argument_spec). Modules pull it in with `extends_documentation_fragment: proxmox_auth`.


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_host:
    description:
      - Host name or address of a Proxmox VE node's API.
      - Falls back to the E(PROXMOX_HOST) environment variable.
    type: str
    required: true
  api_port:
    description:
      - TCP port of the API.
      - Falls back to E(PROXMOX_PORT).
    type: int
    default: 8006
  api_user:
    description:
      - User to authenticate as, with its realm, for example V(root@pam).
      - Required unless O(api_token_id) is the full V(user@realm!tokenname).
      - Falls back to E(PROXMOX_USER).
    type: str
  api_password:
    description:
      - Password of O(api_user); the module then uses ticket authentication.
      - Falls back to E(PROXMOX_PASSWORD). Never logged.
      - Exactly one of O(api_password) and O(api_token_secret) must be given.
    type: str
  api_token_id:
    description:
      - API token name (with O(api_user)) or full token id V(user@realm!tokenname).
      - Falls back to E(PROXMOX_TOKEN_ID).
    type: str
  api_token_secret:
    description:
      - Secret (UUID) of the API token named by O(api_token_id).
      - Falls back to E(PROXMOX_TOKEN_SECRET). Never logged.
    type: str
  validate_certs:
    description:
      - Verify the API's TLS certificate. Keep it on; point O(ca_path) at the CA of a self-signed node
        instead of turning it off.
      - Falls back to E(PROXMOX_VALIDATE_CERTS).
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA that signed the API's certificate (a node's C(/etc/pve/pve-root-ca.pem)).
      - Without it the system trust store is used.
      - Falls back to E(PROXMOX_CA_PATH).
    type: path
  api_timeout:
    description:
      - Seconds to wait for one API request (not for a task; see the module's own timeout).
      - Also how long a refused connection is tried again, so a restarting API (pveproxy reload) does not
        fail the run; writes are retried only when they cannot have reached the server.
      - Falls back to E(PROXMOX_API_TIMEOUT) (community.proxmox's name), then E(PROXMOX_TIMEOUT).
    type: int
    default: 10
requirements:
  - proxmoxer >= 2.0
  - requests
"""
