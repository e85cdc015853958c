"""Simulated hosts on one machine: Linux network namespaces joined to this one by veth links,
and a TCP forwarder that makes this machine's loopback services (PostgreSQL, Redis, the S3
server) answer on the host side of each link. Nothing outside this machine is ever addressed.

    with simulated_hosts(["a", "b"], ports=[5432, 6379, 9000]) as hosts:
        hosts[0].command(["python", ...])   # runs in namespace pr-a-<tag>; 10.201.1.1:5432 there
                                            # is PostgreSQL (hosts[0].gateway)

Needs root (CAP_NET_ADMIN) for `ip netns` and `ip link`; `netns_available()` says whether this
machine allows it. Without it, `loopback_hosts` gives two "hosts" that are only distinct
loopback addresses of this namespace (127.0.0.2, 127.0.0.3): the same forwarder, no isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


def _free_subnet() -> str:
    """A 10.x prefix that no address of this machine uses yet (runs side by side never clash)."""
    used = subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True).stdout
    for second in range(201, 255):
        if f" 10.{second}." not in used:
            return f"10.{second}"
    raise RuntimeError("no free 10.x subnet for the simulated hosts")


@dataclass(frozen=True)
class SimHost:
    name: str
    namespace: str | None  # None: a loopback address in this namespace, not a namespace
    address: str  # the host's own address
    gateway: str  # where it reaches the shared services (this machine's side of its link)

    def command(self, argv: Sequence[str]) -> list[str]:
        if self.namespace is None:
            return list(argv)
        return ["ip", "netns", "exec", self.namespace, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def netns_available() -> bool:
    probe = f"pr-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError):
        return False
    _ip("netns", "del", probe)
    return True


class Forwarder:
    """Accept on (listen address, port) and relay each connection to 127.0.0.1:port."""

    def __init__(self, listen: Sequence[str], ports: Sequence[int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        for address in listen:
            for port in ports:
                fut = asyncio.run_coroutine_threadsafe(self._serve(address, port), self.loop)
                self._servers.append(fut.result(timeout=10))

    async def _serve(self, address: str, port: int) -> asyncio.base_events.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        return await asyncio.start_server(handle, address, port)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.contextmanager
def simulated_hosts(names: Sequence[str], *, ports: Sequence[int]) -> Iterator[list[SimHost]]:
    """One network namespace per name, linked to this one by a veth pair on its own /24, with
    the given loopback ports forwarded from this side of every link. Removed on exit."""
    hosts: list[SimHost] = []
    tag = uuid.uuid4().hex[:4]
    subnet = _free_subnet()
    try:
        for i, name in enumerate(names, start=1):
            ns, outer, inner = f"pr-{name}-{tag}", f"pr{i}o{tag}", f"pr{i}i{tag}"
            gateway, address = f"{subnet}.{i}.1", f"{subnet}.{i}.2"
            _ip("netns", "add", ns)
            hosts.append(SimHost(name, ns, address, gateway))
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{gateway}/24", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        forwarder = Forwarder([h.gateway for h in hosts], ports)
        try:
            yield hosts
        finally:
            forwarder.close()
    finally:
        for host in hosts:  # deleting the namespace deletes its veth end, and so the pair
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", str(host.namespace))


@contextlib.contextmanager
def loopback_hosts(names: Sequence[str], *, ports: Sequence[int]) -> Iterator[list[SimHost]]:
    """The fallback without CAP_NET_ADMIN: NOT namespaces, only distinct loopback addresses."""
    hosts = [SimHost(n, None, f"127.0.0.{i}", f"127.0.0.{i}") for i, n in enumerate(names, 2)]
    forwarder = Forwarder([h.gateway for h in hosts], ports)
    try:
        yield hosts
    finally:
        forwarder.close()
