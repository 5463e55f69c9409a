"""DOCUMENTATION (with the proxmox_auth fragment) and argument_spec say the same thing, and ansible-doc
renders the module from the repository root with the fragment resolved through ansible.cfg."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml
from ansible_cli import run_ansible

REPO = Path(__file__).resolve().parents[2]


def _fragment():
    path = REPO / "plugins" / "doc_fragments" / "proxmox_auth.py"
    spec = importlib.util.spec_from_file_location("proxmox_auth_fragment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)


def _compare(spec, docs, where):
    assert set(spec) == set(docs), f"{where}: argument_spec {sorted(spec)} vs docs {sorted(docs)}"
    for name, arg in spec.items():
        doc = docs[name]
        assert arg.get("type", "str") == doc.get("type", "str"), f"{where}{name}: type"
        assert arg.get("default") == doc.get("default"), f"{where}{name}: default"
        assert arg.get("choices") == doc.get("choices"), f"{where}{name}: choices"
        assert bool(arg.get("required")) == bool(doc.get("required")), f"{where}{name}: required"
        assert arg.get("elements") == doc.get("elements"), f"{where}{name}: elements"
        if "options" in arg:
            _compare(arg["options"], doc["suboptions"], f"{where}{name}.")


def test_argument_spec_matches_documentation(lxc):
    docs = yaml.safe_load(lxc.DOCUMENTATION)
    assert docs["extends_documentation_fragment"] == ["proxmox_auth"]
    options = dict(_fragment()["options"], **docs["options"])
    _compare(lxc.argument_spec(), options, "")
    yaml.safe_load(lxc.EXAMPLES)
    returned = yaml.safe_load(lxc.RETURN)
    assert {"vmid", "node", "hostname", "status", "config", "ip_addresses", "changed", "diff", "msg"} <= set(
        returned
    )


def test_secrets_are_no_log(lxc):
    spec = lxc.argument_spec()
    assert all(spec[name].get("no_log") is True for name in ("api_password", "api_token_secret", "password"))


def test_ansible_doc_renders_with_the_fragment():
    proc = run_ansible("ansible-doc", "-M", "plugins/modules", "proxmox_lxc")
    assert proc.returncode == 0, proc.stderr
    assert "api_token_secret" in proc.stdout  # from the fragment
    assert "ip_addresses" in proc.stdout and "EXAMPLES" in proc.stdout
