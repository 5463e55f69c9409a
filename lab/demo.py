"""`python -m lab demo` (`make demo`): the whole product against the offline lab, with timings.

1. `python -m lab up` (emulators, bridge, template);
2. `ansible-playbook site.yml` with the lab inventory: relay.lab.test on two containers (pve1, pve2);
3. `llm-relay ask --encrypt` with the client artifact site.yml wrote, through the lab edge, as a user would;
4. what was built (read back from the emulators) and how to point the same playbooks at a real Proxmox VE
   and Cloudflare account.
Running it again converges: the second site.yml reports changed=0 and the demo says so.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from llm_relay import __version__

from lab import config
from lab.edge import binary

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOSTNAME = "relay.lab.test"
PROMPT = "Say hello from the homelab relay."
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{BIN}:{out.get('PATH', '')}"
    out["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    return out


def step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.monotonic()


def run_streamed(argv: list[str], **kwargs: Any) -> tuple[int, str]:
    """Run argv, echoing its output as it comes; returns the exit status and the output."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    return proc.wait(), "".join(lines)


def built(cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The relay containers and the tunnel, read back from the Proxmox and Cloudflare emulators."""
    verify = str(config.ca_path())
    pve, cf = cfg["pve"], cfg["cloudflare"]
    auth = f"PVEAPIToken={pve['user']}!{pve['token_id']}={pve['token_secret']}"
    resources = requests.get(
        f"https://127.0.0.1:{pve['port']}/api2/json/cluster/resources",
        params={"type": "vm"},
        headers={"Authorization": auth},
        verify=verify,
        timeout=30,
    ).json()["data"]
    # PVE fills a guest's name and status in /cluster/resources from its node's last status round (every
    # 10 s; lab/pve/statuscache.py): a container created or started seconds ago is read from its config
    # and its own status/current, as a client of real PVE must.
    containers = []
    for res in resources:
        base = f"https://127.0.0.1:{pve['port']}/api2/json/nodes/{res['node']}/lxc/{res['vmid']}"

        def read(path: str, base: str = base) -> dict[str, Any] | None:
            answer = requests.get(base + path, headers={"Authorization": auth}, verify=verify, timeout=30)
            return answer.json()["data"] if answer.ok else None  # None: removed since the listing

        if "name" not in res:
            res["name"] = (read("/config") or {}).get("hostname", "")
        if str(res["name"]).startswith("llm-relay-"):
            current = read("/status/current")
            if current is not None:
                res["status"] = current["status"]
                containers.append(res)
    containers.sort(key=lambda r: r["vmid"])
    tunnels = requests.get(
        f"https://127.0.0.1:{cf['port']}/client/v4/accounts/{cf['account_id']}/cfd_tunnel",
        params={"name": f"llm-relay-{HOSTNAME}", "is_deleted": "false"},
        headers={"Authorization": f"Bearer {cf['api_token']}"},
        verify=verify,
        timeout=30,
    ).json()["result"]
    return containers, (tunnels[0] if tunnels else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab demo", description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=PROMPT, help="the question asked through the relay")
    args = parser.parse_args(argv or [])
    timings: list[tuple[str, float]] = []
    total = time.monotonic()
    try:  # before anything is started: the connector every container runs is the real cloudflared
        print(f"cloudflared: {binary.locate()} (sha256 {binary.SHA256[:12]}…, {binary.VERSION})", flush=True)
    except binary.BinaryMissing as exc:
        print(f"make demo needs the real cloudflared: {exc}", file=sys.stderr)
        return 2

    started = step("1/3 lab up: Proxmox VE and Cloudflare emulators, lab edge, fake OpenRouter")
    rc, _ = run_streamed([sys.executable, "-m", "lab", "up"])
    timings.append(("lab up", time.monotonic() - started))
    if rc:
        print("lab up failed: see the lines above", file=sys.stderr)
        return rc

    started = step(f"2/3 ansible-playbook site.yml (inventory/lab: {HOSTNAME}, 2 replicas)")
    rc, output = run_streamed([str(BIN / "ansible-playbook"), "site.yml"])
    timings.append(("site.yml", time.monotonic() - started))
    if rc:
        print(
            "site.yml failed: see the lines above (re-running it resumes where it stopped)", file=sys.stderr
        )
        return rc
    changed = {m[1]: int(m[3]) for m in RECAP.finditer(output)}

    artifact = ROOT / "artifacts" / f"{HOSTNAME}.toml"
    started = step(f'3/3 LLM_RELAY_CLIENT_CONFIG={artifact.relative_to(ROOT)} llm-relay ask --encrypt "..."')
    print(f"Q: {args.prompt}", flush=True)
    ask = subprocess.run(
        [str(BIN / "llm-relay"), "ask", "--encrypt", args.prompt],
        cwd=ROOT,
        env={**env(), "LLM_RELAY_CLIENT_CONFIG": str(artifact)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    timings.append(("question end to end", time.monotonic() - started))
    if ask.returncode:
        print(f"llm-relay ask failed (exit {ask.returncode}):\n{ask.stderr}", file=sys.stderr)
        return ask.returncode
    print(f"A: {ask.stdout.strip()}")
    print(
        "   (client -> lab edge -> tunnel -> cloudflared -> relay -> fake OpenRouter;"
        " envelope v2, AES-GCM sealed)"
    )

    report(config.load(), artifact, changed)
    print("\nTimings:")
    for name, seconds in [*timings, ("total", time.monotonic() - total)]:
        print(f"  {name:<22} {seconds:6.1f} s")
    return 0


def report(cfg: dict[str, Any], artifact: Path, changed: dict[str, int]) -> None:
    containers, tunnel = built(cfg)
    print("\n=== What was built")
    for c in containers:
        print(f"  container {c['vmid']} {c['name']:<14} on {c['node']}  {c['status']}")
    if tunnel:
        connectors = {c.get("client_id") for c in tunnel.get("connections", [])}
        status = f"{tunnel['status']}, {len(connectors)} connector(s)"
        print(f"  tunnel    {tunnel['name']} ({tunnel['id']}), {status}")
    print(
        f"  hostname  {HOSTNAME} (proxied CNAME -> <tunnel id>.cfargotunnel.com), lab edge on 127.0.0.1:9443"
    )
    print(f"  client    {artifact} (0600: URL, client token, Fernet key)")
    if changed and not any(changed.values()):
        print("  site.yml  changed=0 on every host: everything was already in place")
    elif changed:
        print(f"  site.yml  changed per host: {changed} (a second `make demo` converges with changed=0)")
    rel = artifact.relative_to(ROOT) if artifact.is_relative_to(ROOT) else artifact
    print(
        "\n=== Use it from the PC (relay/docs/client.md)\n"
        "  here the client is in .venv/bin; on the PC, with the artifact and the wheel beside it copied:\n"
        f"  pip install '{rel.parent}/llm_relay-{__version__}-py3-none-any.whl[client]'\n"
        f"  export LLM_RELAY_CLIENT_CONFIG={rel}\n"
        '  .venv/bin/llm-relay ask "hello"          # one question; add --encrypt to seal it\n'
        "  .venv/bin/llm-relay doctor               # checks each hop, secrets masked\n"
        "  .venv/bin/llm-relay serve-local --encrypt --port 8788 &   # OpenAI-compatible on loopback:\n"
        "  export OPENAI_BASE_URL=http://127.0.0.1:8788/v1 OPENAI_API_KEY=unused\n"
        "  .venv/bin/python -c 'from openai import OpenAI; print(OpenAI().chat.completions.create(\n"
        '  model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices[0].message)\'\n'
        "  aider --openai-api-base $OPENAI_BASE_URL --model openai/openai/gpt-4o-mini"
    )
    print(
        "\n=== Your own Proxmox VE and Cloudflare (README: 'Point it at your own Proxmox and Cloudflare')\n"
        "  cp -r inventory/example inventory/prod && cd inventory/prod/group_vars/all\n"
        "  $EDITOR main.yml                       # API host, nodes, storage, bridge, zone, hostname\n"
        "  cp vault.yml.example vault.yml && $EDITOR vault.yml && ansible-vault encrypt vault.yml\n"
        "  cd - && ansible-playbook -i inventory/prod site.yml --ask-vault-pass\n"
        "  later: ansible-playbook -i inventory/prod playbooks/destroy.yml -e confirm=yes --ask-vault-pass"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
