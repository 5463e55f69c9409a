#!/usr/bin/env python3
"""Inventory of the offline lab: reads lab/lab.toml so no lab credential is repeated in YAML.

Ansible runs this script (`--list`); it prints group variables in the same names as the production
inventory (inventory/example/group_vars/all/main.yml), pointing at the lab's emulators. The relay hosts
themselves are added in memory by site.yml, from the containers it creates.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lab import config  # noqa: E402
from lab.edge import binary  # noqa: E402


def lab_vars() -> dict:
    cfg = config.load()
    pve, cf, up, edge = cfg["pve"], cfg["cloudflare"], cfg["upstream"], cfg.get("edge", {})
    ca = str(config.ca_path())
    gateway = config.BRIDGE_ADDR
    hostname = f"relay.{cf['zone']}"
    team_domain = edge.get("access_team_domain", "team.lab.test")
    try:
        cloudflared_src = str(binary.locate())
    except binary.BinaryMissing as exc:  # the role's validation then names the missing file
        print(f"lab inventory: {exc}", file=sys.stderr)
        cloudflared_src = ""
    return {
        "relay_env_name": "lab",
        # Proxmox VE API emulator
        "proxmox_api_host": "127.0.0.1",
        "proxmox_api_port": pve["port"],
        "proxmox_api_user": pve["user"],
        "proxmox_api_token_id": pve["token_id"],
        "proxmox_api_token_secret": pve["token_secret"],
        "proxmox_ca_path": ca,
        "relay_nodes": list(pve["nodes"]),
        "relay_replicas": 2,
        "relay_vmid_base": 101,
        "relay_ostemplate": f"{pve['storage']}:vztmpl/debian-12-standard_12.15-1_amd64.tar.zst",
        "relay_template_download": True,
        "relay_container_storage": pve["rootdir_storage"],
        "relay_bridge": "vmbr0",
        # Cloudflare API emulator
        "cloudflare_api_base_url": f"https://127.0.0.1:{cf['port']}/client/v4",
        "cloudflare_api_token": cf["api_token"],
        "cloudflare_account_id": cf["account_id"],
        "cloudflare_ca_path": ca,
        "cloudflare_zone": cf["zone"],
        "relay_public_hostname": hostname,
        # The lab edge stands in for Cloudflare's: clients reach it on loopback, port 9443.
        "relay_public_url": f"https://{hostname}:{edge.get('port', 9443)}",
        "relay_public_ca_path": ca,
        # The fake upstream stands in for OpenRouter; the containers reach it on the bridge gateway.
        "relay_providers": [
            {
                "name": "openrouter",
                "base_url": f"https://{gateway}:{up['port']}/api/v1",
                "api_keys": [up["api_keys"][0]],
                "headers": {
                    "HTTP-Referer": "https://github.com/llm-relay-homelab",
                    "X-Title": "llm-relay lab",
                },
            }
        ],
        # Certificates the containers must trust (the lab CA signs the edge's and the upstream's).
        "relay_extra_ca_certificates": [Path(ca).read_text(encoding="ascii")] if Path(ca).exists() else [],
        # The real cloudflared (pinned by sha256, lab/edge/binary.py), copied from the controller: these
        # machines cannot download Cloudflare's release. Only its environment differs from production:
        # the lab edge's address, the lab CA for the edge's certificate (it replaces Cloudflare's roots
        # for edge connections only) and HTTP/2, the one transport the lab edge speaks.
        "cloudflared_install_method": "file",
        "cloudflared_file_src": cloudflared_src,
        "cloudflared_version": binary.VERSION,  # the role asserts the installed binary reports it
        "cloudflared_environment": {
            "TUNNEL_EDGE": f"{gateway}:{edge.get('ports', [7844])[0]}",
            "TUNNEL_CACERT": "/usr/local/share/ca-certificates/llm-relay-extra-0.crt",
            "TUNNEL_TRANSPORT_PROTOCOL": "http2",
        },
        # Cloudflare Access in front of the relay (issue 28): the Cloudflare emulator holds the application,
        # policy and service token, the lab edge enforces them and signs Cf-Access-Jwt-Assertion. The team
        # domain carries the edge's port: the edge names https://team.lab.test:9443 as the tokens' `iss`
        # and serves the certs there. The containers resolve it to the edge on the bridge gateway, and
        # trust its certificate by the lab CA the bootstrap installed (relay_extra_ca_certificates).
        "cloudflare_access_enabled": True,
        "cloudflare_access_team_domain": f"{team_domain}:{edge.get('port', 9443)}",
        "relay_extra_hosts": {team_domain: gateway},
        "cloudflare_access_ca_file": "/usr/local/share/ca-certificates/llm-relay-extra-0.crt",
        # Throw-away containers on the lab bridge: their host keys are new on every create.
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--host":
        print("{}")
        return
    print(
        json.dumps(
            {
                "all": {"vars": lab_vars(), "children": ["relays"]},
                "relays": {"hosts": []},
                "_meta": {"hostvars": {}},
            }
        )
    )


if __name__ == "__main__":
    main()
