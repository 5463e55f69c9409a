"""Make our module_utils and the proxmox_lxc module importable the way Ansible lays them out.

Ansible serves plugins/module_utils as `ansible.module_utils.*`; unit tests get the same by extending
that package's path, then load plugins/modules/proxmox_lxc.py as the module `proxmox_lxc`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import ansible.module_utils

REPO = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO / "plugins" / "module_utils"
if str(MODULE_UTILS) not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(MODULE_UTILS))


def load_module(name: str = "proxmox_lxc"):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "plugins" / "modules" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lxc():
    """The proxmox_lxc module, imported from plugins/modules."""
    return load_module("proxmox_lxc")
