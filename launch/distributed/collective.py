"""The weight channel over torch.distributed groups: nccl between GPUs, gloo on CPU (``train.weight_sync=collective``).

Same small interface as :class:`arbor.core.channels.WeightChannel`: the learner calls ``publish(version,
state)``, an actor calls ``poll(have_version)`` between searches and gets a ``WeightPoll``.

How the bytes move:

- Learner rank 0 runs a :class:`WeightServer`: a ``TCPStore`` on its node and one serving thread. ``publish``
  copies the weights into one flat buffer per dtype (on the learner's GPU for nccl) and announces the version
  through the :class:`~arbor.launch.distributed.coordinator.Coordinator`; it moves no bytes to anyone.
- An actor that sees a newer version joins once: it takes a ticket from the store and forms a two-rank group
  (its own communicator) with the server. It then writes "I have version v" into the store; the serving
  thread answers by broadcasting the newest version's number and buffers in that pair's group.
- So pull-with-version holds as on the object-store path: an actor always gets the newest weights, however
  many versions it was too busy to see. A busy actor never stalls the learner (the learner only copies).
  Transfers are served one at a time, so an actor waits at most for the transfers queued before its own.

Failures cost one pair, never the learner:
- Pairs form on their own threads, each over its own store connection, so an actor that took a ticket and
  died before its half of the group holds up nobody.
- A restarted actor joins again with a new ticket under the same name, and its dead pair is dropped then.
  A pair whose transfer fails is dropped too.
- Requests travel through the store (a key per pair, and a doorbell key the serving thread sleeps on),
  not as pending collectives, so no rank waits inside a collective for a peer that may be gone. nccl
  pairs are built with the watchdog's teardown off (``TORCH_NCCL_ASYNC_ERROR_HANDLING=0``): a transfer
  past its deadline aborts its pair instead.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import threading
import time
from typing import Any

import ray
import torch
import torch.distributed as dist

from arbor.core.channels import WeightChannel, WeightPoll, state_bytes
from arbor.launch.distributed.coordinator import ServerAddress

log = logging.getLogger(__name__)

NCCL_ERROR_HANDLING = "TORCH_NCCL_ASYNC_ERROR_HANDLING"
BELL = "bell"  # the doorbell key: set after every request or join, deleted by the serving thread as it looks
IDLE_WAIT = datetime.timedelta(hours=1)  # the serving thread's longest sleep on the doorbell
TRANSFER_TIMEOUT = datetime.timedelta(minutes=5)  # one pair's transfer; longer is a failure


def _pair_group(
    store: Any, ticket: int, rank: int, backend: str, timeout: datetime.timedelta = TRANSFER_TIMEOUT
) -> Any:
    """A two-rank process group (server rank 0, actor rank 1) private to one actor's ticket."""
    prefixed = dist.PrefixStore(f"pair/{ticket}/", store)
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        # A peer that dies mid-transfer must cost its pair, not the process: the watchdog's default
        # (tear the process down) would take learner rank 0 with it. _wait() aborts the pair instead.
        previous = os.environ.get(NCCL_ERROR_HANDLING)
        os.environ[NCCL_ERROR_HANDLING] = "0"
        try:
            return dist.ProcessGroupNCCL(prefixed, rank, 2, options)
        finally:
            if previous is None:
                os.environ.pop(NCCL_ERROR_HANDLING, None)
            else:
                os.environ[NCCL_ERROR_HANDLING] = previous
    return dist.ProcessGroupGloo(prefixed, rank, 2, timeout)


def _wait(work: Any, group: Any, timeout: datetime.timedelta = TRANSFER_TIMEOUT) -> None:
    """Wait for one collective on the CPU. Gloo raises when the peer is gone; an nccl wait only orders
    streams, so poll for completion and abort the pair past the deadline."""
    if not torch.cuda.is_available() or not isinstance(group, getattr(dist, "ProcessGroupNCCL", ())):
        work.wait()
        return
    deadline = time.monotonic() + timeout.total_seconds()
    while not work.is_completed():
        if time.monotonic() > deadline:
            group.abort()
            raise TimeoutError(f"weight transfer did not finish in {timeout}")
        time.sleep(1e-4)
    work.wait()


def flatten(state: dict[str, torch.Tensor], device: str) -> tuple[list[list[Any]], list[torch.Tensor]]:
    """(layout, one flat buffer per dtype): layout rows are [name, dtype, shape, buffer index, offset]."""
    dtypes: list[torch.dtype] = []
    parts: list[list[torch.Tensor]] = []
    layout: list[list[Any]] = []
    offsets: list[int] = []
    for name, tensor in state.items():
        if tensor.dtype not in dtypes:
            dtypes.append(tensor.dtype)
            parts.append([])
            offsets.append(0)
        i = dtypes.index(tensor.dtype)
        layout.append([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), i, offsets[i]])
        parts[i].append(tensor.detach().reshape(-1))
        offsets[i] += tensor.numel()
    flats = [torch.cat(p).to(device) for p in parts]
    return layout, flats


def unflatten(layout: list[list[Any]], flats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict back from :func:`flatten`'s layout and buffers (views into the buffers)."""
    return {name: flats[i][offset : offset + math.prod(shape)].view(shape) for name, _, shape, i, offset in layout}


def empty_buffers(layout: list[list[Any]], device: str) -> list[torch.Tensor]:
    """Receive buffers for a layout: one per dtype, sized to hold every tensor of that dtype."""
    sizes: dict[int, tuple[torch.dtype, int]] = {}
    for _name, dtype, shape, i, offset in layout:
        end = max(sizes.get(i, (None, 0))[1], offset + math.prod(shape))
        sizes[i] = (getattr(torch, dtype), end)
    return [torch.empty(sizes[i][1], dtype=sizes[i][0], device=device) for i in range(len(sizes))]


class WeightServer:
    """Learner rank 0's side: the store, the newest flat weights, and the thread that serves pulls.

    Pairs are formed on their own short-lived threads, so an actor that took a ticket and died before
    its half of the group never holds up the others; transfers are served one at a time.
    """

    def __init__(self, backend: str, device: str, host: str | None = None):
        self.backend, self.device = backend, device
        self.host = host or ray.util.get_node_ip_address()
        self.store = dist.TCPStore(self.host, 0, is_master=True, wait_for_workers=False)
        self.latest: tuple[int, list[torch.Tensor]] | None = None  # replaced whole, never written in place
        self.layout: list[list[Any]] | None = None
        self.lock = threading.Lock()  # guards pairs, names and stores (the forming threads add to them)
        self.pairs: dict[int, Any] = {}  # ticket -> the pair's process group
        self.names: dict[str, int] = {}  # actor name -> its newest ticket
        self.stores: dict[int, Any] = {}  # ticket -> the store connection its group was formed over
        self.accepted = 0  # tickets looked at so far
        self.served = 0  # transfers done
        self.failed: list[str] = []  # why pairs were dropped
        self.error: BaseException | None = None  # what stopped the serving thread, if anything did
        self.closed = False
        self.thread = threading.Thread(target=self._serve, name="weight-server", daemon=True)
        self.thread.start()

    @property
    def address(self) -> ServerAddress:
        return ServerAddress(self.host, self.store.port, self.backend)

    def update(self, version: int, state: dict[str, torch.Tensor]) -> None:
        if not self.thread.is_alive():
            raise RuntimeError(f"the weight server's thread has stopped ({self.error!r}); actors cannot pull")
        layout, flats = flatten(state, self.device)
        if self.layout is None:
            self.layout = layout
            self.store.set("layout", json.dumps(layout))
        elif layout != self.layout:
            raise ValueError("the published weights changed names, shapes or dtypes mid-run; actors cannot load them")
        self.latest = (version, flats)

    def close(self) -> None:
        """Stop serving and release every pair's group."""
        self.closed = True
        self.store.set(BELL, "1")
        self.thread.join(timeout=5)
        with self.lock:
            for ticket in list(self.pairs):
                self._drop(ticket, "closed")

    def _serve(self) -> None:
        # Sleeps on the doorbell (its own store connection) until an actor asks, joins, or close() rings.
        bell = dist.TCPStore(self.host, self.store.port, is_master=False, timeout=IDLE_WAIT)
        while not self.closed:
            try:
                bell.wait([BELL], IDLE_WAIT)
            except dist.DistStoreError:  # an idle hour: look again
                continue
            try:
                # re-arm before looking, so a request rung after this is seen on the next turn
                self.store.delete_key(BELL)
                self._accept()
                with self.lock:
                    tickets = list(self.pairs)
                for ticket in tickets:
                    key = f"pair/{ticket}/want"
                    if self.store.check([key]):
                        have = int(self.store.get(key))
                        self.store.delete_key(key)
                        self._send(ticket, have)
            except Exception as exc:  # the store itself failed: nothing more can be served
                self.error = exc
                log.error("weight server stopped: %r", exc)
                return

    def _accept(self) -> None:
        """Start forming the group of every actor that took a ticket since the last look."""
        tickets = self.store.add("tickets", 0)
        new = range(self.accepted + 1, tickets + 1)
        self.accepted = tickets
        for ticket in new:
            threading.Thread(target=self._form, args=(ticket,), name=f"weight-pair-{ticket}", daemon=True).start()

    def _form(self, ticket: int) -> None:
        # Its own connection to the store: a rendezvous blocks on the connection it uses, and the serving
        # thread's must stay free.
        try:
            store = dist.TCPStore(self.host, self.store.port, is_master=False, timeout=TRANSFER_TIMEOUT)
            name = store.get(f"join/{ticket}").decode()
            group = _pair_group(store, ticket, 0, self.backend)
        except Exception as exc:  # the actor died between its ticket and its half of the group
            self.failed.append(f"ticket {ticket}: {exc}")
            return
        with self.lock:
            old = self.names.get(name)
            if old in self.pairs:  # the same actor again (Ray restarted it): its old pair is dead
                self._drop(old, f"{name} joined again with ticket {ticket}")
            self.names[name] = ticket
            self.pairs[ticket] = group
            self.stores[ticket] = store
        store.set(BELL, "1")  # the actor may have asked already: look again now that the pair is here

    def _drop(self, ticket: int, why: str) -> None:
        group = self.pairs.pop(ticket, None)
        self.stores.pop(ticket, None)
        self.failed.append(f"ticket {ticket}: {why}")
        if group is not None and hasattr(group, "abort"):
            try:
                group.abort()
            except Exception as exc:  # already broken: nothing more to release
                log.debug("weight server: aborting pair %d: %r", ticket, exc)

    def _send(self, ticket: int, have: int) -> None:
        version, flats = self.latest if self.latest is not None else (-1, [])
        newer = version > have
        header = torch.tensor([version if newer else -1], dtype=torch.int64, device=self.device)
        with self.lock:
            group = self.pairs.get(ticket)
        if group is None:
            return
        try:
            _wait(group.broadcast(header, 0), group)
            if newer:
                for flat in flats:
                    _wait(group.broadcast(flat, 0), group)
            self.served += 1
        except Exception as exc:  # the actor died mid-transfer: drop its pair; a restart takes a new ticket
            log.warning("weight server: dropping pair %d: %s", ticket, exc)
            with self.lock:
                self._drop(ticket, repr(exc))


class CollectiveWeightChannel(WeightChannel):
    """Publisher (learner rank 0) and puller (actors) over pairwise groups; see the module docstring."""

    def __init__(self, coordinator: Any, backend: str = "gloo", device: str = "cpu", name: str = "actor"):
        self.coordinator = coordinator
        self.backend, self.device, self.name = backend, device, name
        self.server: WeightServer | None = None
        self.store: Any = None
        self.group: Any = None
        self.buffers: list[torch.Tensor] = []
        self.layout: list[list[Any]] | None = None
        self.ticket = 0

    # ---- learner side -------------------------------------------------------------------------

    def publish(self, version: int, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Copy ``state`` into the server's flat buffers and announce ``version``; returns time and bytes."""
        t0 = time.perf_counter()
        if self.server is None:
            self.server = WeightServer(self.backend, self.device)
            ray.get(self.coordinator.serve_weights.remote(self.server.address))
        self.server.update(version, state)
        ray.get(self.coordinator.publish.remote(version, []))
        return {"sync/publish_seconds": time.perf_counter() - t0, "sync/bytes": float(state_bytes(state))}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    # ---- actor side ---------------------------------------------------------------------------

    def poll(self, have_version: int) -> WeightPoll:
        reply = ray.get(self.coordinator.poll.remote(have_version))
        if reply.stop or reply.version <= have_version or reply.server is None:
            return WeightPoll(reply.version, None, reply.stop)
        version = self.fetch(have_version, reply.server)
        if version <= have_version:
            return WeightPoll(reply.version, None, reply.stop)
        return WeightPoll(version, unflatten(self.layout, self.buffers), reply.stop)

    def fetch(self, have_version: int, server: ServerAddress) -> int:
        """Ask the server for anything newer than ``have_version``; the received version (-1: nothing newer).
        The weights land in ``self.buffers``."""
        if self.group is None:
            self._join(server)
        try:
            self.store.set(f"pair/{self.ticket}/want", str(have_version))
            self.store.set(BELL, "1")
            header = torch.empty(1, dtype=torch.int64, device=self.device)
            _wait(self.group.broadcast(header, 0), self.group)
            version = int(header.item())
            if version > have_version:
                for buf in self.buffers:
                    _wait(self.group.broadcast(buf, 0), self.group)
        except Exception:  # out of step with the server now: the next pull joins afresh with a new ticket
            self.group = self.store = None
            raise
        return version

    def _join(self, server: ServerAddress) -> None:
        if server.backend != self.backend:
            raise RuntimeError(
                f"{self.name}: the weight server speaks {server.backend} but this actor was set up for"
                f" {self.backend} (train.weight_sync=collective needs GPUs on both sides for nccl)"
            )
        self.store = dist.TCPStore(server.host, server.port, is_master=False, timeout=TRANSFER_TIMEOUT)
        self.layout = json.loads(self.store.get("layout"))
        self.buffers = empty_buffers(self.layout, self.device)
        self.ticket = self.store.add("tickets", 1)
        self.store.set(f"join/{self.ticket}", self.name)
        self.store.set(BELL, "1")
        self.group = _pair_group(self.store, self.ticket, 1, self.backend)


def weight_backend(learner_on_gpu: bool, actors_on_gpu: bool) -> tuple[str, str]:
    """(backend, device) of the collective channel: nccl on GPU only when both sides have one."""
    return ("nccl", "cuda") if learner_on_gpu and actors_on_gpu else ("gloo", "cpu")
