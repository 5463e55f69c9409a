"""DOCUMENTATION/EXAMPLES/RETURN: they render with ansible-doc and match the argument specs."""

from __future__ import annotations

import ast
import sys

import pytest
import yaml
from ansible_cli import run_ansible

from .conftest import MODULES, REPO, load_module_utils

NAMES = ["cloudflare_tunnel", "cloudflare_tunnel_ingress", "cloudflare_dns_record"]


def doc_strings(name):
    tree = ast.parse((MODULES / f"{name}.py").read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            target = node.targets[0].id
            if target in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
                out[target] = yaml.safe_load(node.value.value)
    return out


def fragment_options():
    from plugins.doc_fragments.cloudflare_auth import ModuleDocFragment

    return yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]


def argument_spec(name):
    """The module's argument_spec, captured by running main() with AnsibleModule stubbed to raise."""
    from tests.modules_cloudflare.conftest import load_plugin

    module = load_plugin(name)
    captured = {}

    class Captured(Exception):
        pass

    def fake_module(argument_spec, **kwargs):
        captured["spec"] = argument_spec
        captured["kwargs"] = kwargs
        raise Captured

    module.AnsibleModule = fake_module
    with pytest.raises(Captured):
        module.main()
    return captured


def compare(spec, documented, where, top=None):
    top = top or documented
    assert set(spec) == set(documented), where
    for option, opts in spec.items():
        doc = documented[option]
        assert opts.get("type", "str") == doc.get("type", "str"), f"{where}.{option} type"
        assert opts.get("default") == doc.get("default"), f"{where}.{option} default"
        assert bool(opts.get("required")) == bool(doc.get("required")), f"{where}.{option} required"
        assert opts.get("choices") == doc.get("choices"), f"{where}.{option} choices"
        if "options" in opts:
            # rules[].origin_request documents itself as "same keys as the tunnel-wide O(origin_request)".
            subdoc = doc.get("suboptions")
            if subdoc is None and "same keys as the tunnel-wide O(origin_request)" in doc["description"]:
                subdoc = top["origin_request"]["suboptions"]
            compare(opts["options"], subdoc, f"{where}.{option}", top)


@pytest.mark.parametrize("name", NAMES)
def test_documentation_matches_argument_spec(name):
    sys.path.insert(0, str(REPO))
    load_module_utils()
    docs = doc_strings(name)
    assert docs["DOCUMENTATION"]["module"] == name
    assert docs["DOCUMENTATION"]["extends_documentation_fragment"] == ["cloudflare_auth"]
    documented = dict(fragment_options(), **docs["DOCUMENTATION"]["options"])
    captured = argument_spec(name)
    compare(captured["spec"], documented, name)
    assert captured["kwargs"]["supports_check_mode"] is True
    assert captured["spec"]["api_token"]["no_log"] is True
    assert docs["EXAMPLES"] and docs["RETURN"]


@pytest.mark.parametrize("name", NAMES)
def test_ansible_doc_renders_with_the_local_fragment(name):
    proc = run_ansible("ansible-doc", "-M", "plugins/modules", name)
    assert proc.returncode == 0, proc.stderr
    assert "CLOUDFLARE_API_TOKEN" in proc.stdout  # options from the cloudflare_auth fragment
    assert "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout


def test_examples_registering_the_token_use_no_log():
    for name in NAMES:
        for task in doc_strings(name)["EXAMPLES"]:
            args = next(v for k, v in task.items() if k.startswith("cloudflare_"))
            if isinstance(args, dict) and args.get("return_token"):
                assert task.get("no_log") is True, task["name"]
