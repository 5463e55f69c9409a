"""Wall time of one cloudflare_* module invocation against the lab's Cloudflare emulator. Target < 1.5 s.

Every Ansible task starts a fresh Python process for its module, so what counts is the cold cost: the
interpreter, the imports (the `cloudflare` SDK above all) and the API calls. Each figure below is a fresh
interpreter running the module's main() with its arguments (as AnsiballZ hands them over), median of N.
For scale it also prints the import cost of the SDK's typed resources (`client.zero_trust.tunnels`),
which the modules avoid by using the SDK's generic request methods, and the per-task cost inside a real
`ansible-playbook` run compared with `ansible.builtin.ping` in the same run.

Uses a unique tunnel and hostname and removes both at the end. Needs the lab (`python -m lab up`).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 1.5
RUNS = 5
TASKS = 5

BOOT = """
import json, runpy, sys
import ansible.module_utils
import ansible.module_utils.basic as basic
ansible.module_utils.__path__.append({utils!r})
basic._ANSIBLE_ARGS = json.dumps({{"ANSIBLE_MODULE_ARGS": json.loads(sys.stdin.read())}}).encode()
basic._ANSIBLE_PROFILE = "legacy"
runpy.run_path({module!r}, run_name="__main__")
"""


def lab_settings():
    sys.path.insert(0, str(REPO))
    from lab import config

    cfg = config.load()
    cf = cfg["cloudflare"]
    tokens = cf["tokens"].values() if isinstance(cf["tokens"], dict) else cf["tokens"]
    token = next(t["value"] for t in tokens if "Cloudflare Tunnel:Edit" in t.get("permissions", []))
    return {
        "api_base_url": f"https://127.0.0.1:{cf.get('port', 8443)}/client/v4",
        "account_id": cf["account_id"],
        "ca_path": str(config.ca_path()),
        "api_token": token,
    }, cf["zones"][0]["name"]


def invoke(name, args):
    """(wall seconds, result) of one module run in a fresh interpreter."""
    code = BOOT.format(
        utils=str(REPO / "plugins" / "module_utils"), module=str(REPO / "plugins" / "modules" / f"{name}.py")
    )
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(args), capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        result = {"failed": True, "msg": proc.stdout[-500:] + proc.stderr[-500:]}
    if result.get("failed"):
        raise RuntimeError(f"{name} failed: {result.get('msg')}")
    return wall, result


def python_cost(code):
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def median_of(fn, runs=RUNS):
    return statistics.median(fn() for _ in range(runs))


def playbook_per_task(auth, tunnel_name):
    """Seconds per task inside ansible-playbook: TASKS cloudflare_tunnel tasks vs TASKS ping tasks."""
    play = [
        {
            "name": "bench",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [
                {"name": f"t{i}", "cloudflare_tunnel": dict(auth, name=tunnel_name)} for i in range(TASKS)
            ]
            + [{"name": f"p{i}", "ansible.builtin.ping": {}} for i in range(TASKS)],
        }
    ]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yml"
        path.write_text(json.dumps(play))
        # The per-task end times come from a tiny stdout parse: timestamps of "TASK [" banners.
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", str(path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        stamps = []
        for line in proc.stdout:
            if line.startswith(("TASK [", "PLAY RECAP")):
                stamps.append((line.split("[", 1)[-1].split("]")[0], time.perf_counter()))
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError("bench playbook failed")
    gaps = {}
    for (label, start), (_, end) in itertools.pairwise(stamps):
        gaps.setdefault(label[0], []).append(end - start)
    return statistics.median(gaps["t"]), statistics.median(gaps["p"])


def main():
    base_import = median_of(lambda: python_cost("import cloudflare; cloudflare.Cloudflare(api_token='x')"), 3)
    typed_import = median_of(
        lambda: python_cost("import cloudflare; cloudflare.Cloudflare(api_token='x').zero_trust.tunnels"), 3
    )
    bare = median_of(lambda: python_cost("import ansible.module_utils.basic"), 3)
    print("cloudflare_* modules: cold cost per invocation (fresh interpreter each, median)")
    print(f"  python + ansible.module_utils.basic          {bare:6.3f} s")
    print(f"  + import cloudflare (generic client, ours)   {base_import:6.3f} s")
    print(
        f"  + client.zero_trust.tunnels (typed, avoided) {typed_import:6.3f} s  "
        f"({typed_import / base_import:.1f}x ours)"
    )

    try:
        auth, zone = lab_settings()
    except (KeyError, StopIteration, FileNotFoundError, OSError) as exc:
        print(f"  lab settings unavailable ({exc!r}); run `python -m lab up` for the API figures")
        return 1
    suffix = uuid.uuid4().hex[:8]
    tunnel_name, hostname = f"bench-{suffix}", f"bench-{suffix}.{zone}"
    rows = []
    try:
        wall, tunnel = invoke("cloudflare_tunnel", dict(auth, name=tunnel_name))
        rows.append(("cloudflare_tunnel create", wall))
        rules = [{"hostname": hostname, "service": "http://127.0.0.1:8080"}]
        wall, _ = invoke("cloudflare_tunnel_ingress", dict(auth, tunnel_id=tunnel["tunnel_id"], rules=rules))
        rows.append(("cloudflare_tunnel_ingress write", wall))
        dns_args = dict(auth, zone=zone, name=hostname, tunnel_id=tunnel["tunnel_id"])
        wall, _ = invoke("cloudflare_dns_record", dns_args)
        rows.append(("cloudflare_dns_record create", wall))
        for label, name, args in (
            ("cloudflare_tunnel unchanged", "cloudflare_tunnel", dict(auth, name=tunnel_name)),
            (
                "cloudflare_tunnel_ingress unchanged",
                "cloudflare_tunnel_ingress",
                dict(auth, tunnel_id=tunnel["tunnel_id"], rules=rules),
            ),
            ("cloudflare_dns_record unchanged", "cloudflare_dns_record", dns_args),
        ):
            rows.append((label + f" (median of {RUNS})", median_of(lambda n=name, a=args: invoke(n, a)[0])))
        task_s, ping_s = playbook_per_task(auth, tunnel_name)
    finally:
        invoke("cloudflare_dns_record", dict(auth, zone=zone, name=hostname, type="CNAME", state="absent"))
        invoke("cloudflare_tunnel", dict(auth, name=tunnel_name, state="absent"))
    print(f"per invocation against the lab emulator (target < {TARGET_S} s)")
    for label, wall in rows:
        verdict = "ok" if wall < TARGET_S else "OVER TARGET"
        print(f"  {label:48s} {wall:6.3f} s  {verdict}")
    print(f"inside ansible-playbook, median per task of {TASKS}")
    print(f"  cloudflare_tunnel                            {task_s:6.3f} s")
    print(
        f"  ansible.builtin.ping (Ansible's own floor)   {ping_s:6.3f} s  "
        f"(cloudflare_tunnel adds {task_s - ping_s:+.3f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
