"""`llm-relay doctor`: effective configuration (secrets masked), then every hop checked in order.

Order follows the path a request takes: DNS, proxy, TLS, Cloudflare Access and relay /healthz, envelope,
token, upstream. When a
hop fails the hops behind it are skipped (their result would only repeat the same cause). Once the token is
accepted, client and relay versions are compared (a warning when they differ).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from . import doctor_access
from .config import Profile, loose_permissions
from .doctor_net import Check, check_dns, check_tls, open_route
from .doctor_relay import check_auth, check_envelope, check_health, check_upstream
from .doctor_version import check_version
from .network import mask_secret, mask_url, proxy_url

MARKS = {"ok": "[ ok ]", "fail": "[FAIL]", "warn": "[warn]", "skip": "[skip]"}


def effective_config(profile: Profile) -> dict[str, str]:
    proxy = proxy_url(profile)
    route = mask_url(proxy) if proxy else ("direct (host in no_proxy)" if profile.proxy else "direct")
    return {
        "profile": profile.name,
        "source": profile.source,
        "url": profile.url,
        "token": mask_secret(profile.token),
        "fernet_key": mask_secret(profile.fernet_key),
        "encrypt": str(profile.encrypting).lower(),
        "envelope": profile.envelope if profile.encrypting else "(plain mode)",
        "token_channel": "inside envelope" if profile.encrypting else profile.token_channel,
        "access": doctor_access.describe(profile),
        "proxy": route,
        "no_proxy": profile.no_proxy or "(none)",
        "connect_to": profile.connect_to or "(the URL's host)",
        "ca_bundle": profile.ca_bundle or "(system trust store)",
        "verify_tls": str(profile.verify_tls).lower(),
        "timeout": f"{profile.timeout:g} s (connect {profile.connect_timeout:g} s)",
        "model": profile.model,
    }


def _config_check(profile: Profile) -> Check:
    source = Path(profile.source)
    if source.is_file() and loose_permissions(source):
        return Check(
            "config",
            "warn",
            f"{source} is readable by other users and holds secrets",
            "config_permissions",
            f"chmod 600 {source}",
        )
    return Check("config", "ok", "configuration is valid")


def run_checks(profile: Profile) -> list[Check]:
    checks = [_config_check(profile), check_dns(profile)]
    if checks[-1].failed:
        return checks
    sock, route = open_route(profile)
    checks.append(route)
    if sock is None:
        return checks
    checks.append(check_tls(profile, sock))
    if checks[-1].failed:
        return checks
    checks.append(check_health(profile))
    if checks[-1].failed:
        return checks
    checks.append(doctor_access.status(profile))  # /healthz passed the edge: Access let it through
    for step in (check_envelope, check_auth):
        checks.append(step(profile))
        if checks[-1].failed:
            return checks
    checks.append(check_version(profile))  # a warning at worst: the upstream checks still run
    checks.extend(check_upstream(profile))
    return checks


def report(profile: Profile, checks: list[Check], out: TextIO, as_json: bool) -> int:
    failed = [c for c in checks if c.failed]
    if as_json:
        doc = {"config": effective_config(profile), "checks": [vars(c) for c in checks], "ok": not failed}
        out.write(json.dumps(doc, indent=2) + "\n")
        return 1 if failed else 0
    out.write("llm-relay doctor: effective configuration\n")
    for key, value in effective_config(profile).items():
        out.write(f"  {key:<14} {value}\n")
    out.write("\n")
    for check in checks:
        latency = f"  ({check.ms:.0f} ms)" if check.ms is not None else ""
        code = f" [{check.code}]" if check.code and check.status != "ok" else ""
        out.write(f"{MARKS[check.status]} {check.name:<11} {check.detail}{code}{latency}\n")
        if check.hint and check.status in ("fail", "warn"):
            out.write(f"       hint: {check.hint}\n")
    out.write("\nall checks passed\n" if not failed else f"\n{len(failed)} check(s) failed\n")
    return 1 if failed else 0


def report_config_error(message: str, out: TextIO, as_json: bool) -> int:
    check = Check("config", "fail", message, "config_invalid", "see relay/docs/client.md for the keys")
    if as_json:
        out.write(json.dumps({"config": {}, "checks": [vars(check)], "ok": False}, indent=2) + "\n")
    else:
        out.write(f"{MARKS['fail']} config      {message} [config_invalid]\n       hint: {check.hint}\n")
    return 1
