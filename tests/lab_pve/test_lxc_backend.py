"""The LXC backend of the PVE emulator on a broken host: its failures name the cause and the package.

No lab needed: a throw-away lxcpath with a hand-made config, as a half-made container would leave it.
"""

from __future__ import annotations

import os

import pytest

from lab import preflight
from lab.pve import lxc
from lab.pve.tasks import TaskFailed


def broken_container(tmp_path, include):
    backend = lxc.Backend(tmp_path / "lxc")
    (tmp_path / "lxc" / "100").mkdir()
    (tmp_path / "lxc" / "100" / "config").write_text(f"lxc.uts.name = CT100\nlxc.include = {include}\n")
    return backend


async def test_start_with_a_missing_include_names_the_file_and_package(tmp_path, monkeypatch):
    gone = tmp_path / "debian.common.conf"
    monkeypatch.setitem(preflight.FILES, gone, "lxc-templates")
    backend = broken_container(tmp_path, gone)
    with pytest.raises(TaskFailed) as failed:
        await backend.start(100)
    message = str(failed.value)
    assert message.startswith("startup for container '100' failed: the LXC config includes missing host file")
    assert f"{gone} (Debian package lxc-templates)" in message
    assert "lab/host-deps.sh" in message


@pytest.mark.skipif(not preflight._which("lxc-info"), reason="needs lxc (lab/host-deps.sh)")
async def test_a_config_lxc_cannot_load_reads_as_stopped(tmp_path):
    """Listings (/cluster/resources) keep working; the next start says what is wrong."""
    backend = broken_container(tmp_path, tmp_path / "absent.conf")
    assert await backend.state(100) == ("stopped", None)


async def test_a_missing_host_command_names_its_package(monkeypatch):
    monkeypatch.setitem(preflight.COMMANDS, "lxc-no-such-tool", "lxc")
    with pytest.raises(TaskFailed) as failed:
        await lxc.run("lxc-no-such-tool", "-n", "100")
    assert "command 'lxc-no-such-tool' not found on the lab host (Debian package lxc)" in str(failed.value)


def sleeper(backend, vmid):
    """A real container without a template: the host's filesystem, one `sleep` as its init."""
    path = backend.lxcpath / str(vmid)
    path.mkdir()
    (path / "config").write_text(
        f"lxc.uts.name = ct{vmid}\nlxc.init.cmd = /bin/sleep 600\nlxc.net.0.type = empty\n"
        "lxc.apparmor.profile = unconfined\nlxc.console.path = none\nlxc.mount.auto = proc:mixed sys:ro\n"
        "lxc.autodev = 1\n"
    )


@pytest.mark.skipif(not preflight._which("lxc-start"), reason="needs lxc (lab/host-deps.sh)")
async def test_destroy_stops_a_container_that_is_neither_running_nor_stopped(tmp_path):
    """A frozen (or starting, or stopping) container is alive: destroy must stop it before removing its
    directory, because the caller then releases its DHCP lease and a live one would keep answering on
    the address the next container gets (whose SSH would then be refused)."""
    backend, vmid = lxc.Backend(tmp_path / "lxc"), 999001
    sleeper(backend, vmid)
    args = ["-P", str(backend.lxcpath), "-n", str(vmid)]
    await lxc.run("lxc-start", *args, "-d")
    try:
        await lxc.run("lxc-freeze", *args)
        state, pid = await backend.state(vmid)
        assert (state, pid is not None) == ("running", True)
        await backend.destroy(vmid)
        assert not (backend.lxcpath / str(vmid)).exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        if (backend.lxcpath / str(vmid)).exists():
            await lxc.run("lxc-stop", *args, "-k")
