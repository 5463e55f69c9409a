"""The lab daemon (`python -m lab serve`): one asyncio process running every component.

Each component is a subpackage exposing `async def start(ctx: LabContext) -> cleanup`. A component
that fails to start is logged and skipped, so one broken emulator does not take the others down;
`lab up` then reports its port as not answering.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import ssl

from lab import ca, config, net
from lab.context import Cleanup, LabContext

# Components in start order; each engineer appends their own line.
COMPONENTS = [
    "lab.pve",
    "lab.edge",
    "lab.cloudflare",
    "lab.upstream",
]

log = logging.getLogger("lab")


def build_context() -> LabContext:
    cfg = config.load()
    state = config.state_dir()
    certs = ca.ensure(state / "ca")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs["crt"], certs["key"])
    wanted = cfg.get("lab", {}).get("bind_hosts", ["127.0.0.1", config.BRIDGE_ADDR])
    # The gateway address exists only while the bridge is up (not in unit tests or after `down`).
    hosts = [h for h in wanted if h != config.BRIDGE_ADDR or net.bridge_up()]
    return LabContext(
        config=cfg,
        ssl_context=tls,
        ca_path=certs["ca_crt"],
        state_dir=state,
        cache_dir=config.cache_dir(),
        bind_hosts=hosts,
    )


async def run() -> None:
    ctx = build_context()
    cleanups: list[tuple[str, Cleanup]] = []
    for name in COMPONENTS:
        try:
            module = importlib.import_module(name)
            cleanups.append((name, await module.start(ctx)))
            log.info("component %s started", name)
        except Exception:
            log.exception("component %s failed to start", name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("lab daemon up on %s", ", ".join(ctx.bind_hosts))
    await stop.wait()
    for name, cleanup in reversed(cleanups):
        try:
            await cleanup()
        except Exception:
            log.exception("component %s cleanup failed", name)
    log.info("lab daemon stopped")


def main() -> None:
    cfg = config.load()
    logging.basicConfig(
        level=cfg.get("lab", {}).get("log_level", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run())
