"""The daemon's ZAP handler: every connection to the ROUTER is vetted here once.

libzmq asks the handler (an inproc socket at ``inproc://zeromq.zap.01`` in
the broker's context) about each new connection of a socket that has a
``ZAP_DOMAIN``, even on the NULL mechanism. On ``ipc://`` the request's
address is ``localhost:UID:GID:PID``, read from the kernel (SO_PEERCRED), so
it cannot be forged by the peer. A connection the access policy does not
serve is refused here, during the handshake, before libzmq attaches it: it
never reaches the daemon's message handling, and it cannot take over a
collector's routing id either. Its client learns of the refusal from its
socket monitor (``EVENT_HANDSHAKE_FAILED_AUTH``). Accepted connections are
stamped with a ``User-Id`` (:meth:`eventbus.peers.Peer.user_id`) that libzmq
attaches to every frame they send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import zmq

from eventbus._loopsock import LoopReader
from eventbus.peers import AccessPolicy, Peer, parse_address

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
DOMAIN = b"eventbus"
#: a refused client reconnects every 100 ms: its refusal is logged at most this often
_LOG_EVERY_S = 60.0


class ZapHandler:
    """Answers libzmq's authentication requests from the event loop."""

    def __init__(self, ctx: zmq.Context[Any], policy: AccessPolicy) -> None:
        self.policy = policy
        self._sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(ZAP_ENDPOINT)
        self._reader: LoopReader[list[bytes]] | None = None
        self._serial = 0
        self.connections = 0
        self.refused = 0
        self._logged: dict[int, float] = {}  # uid -> when its refusal was last logged

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = self._sock
        self._reader = LoopReader(loop, sock, lambda: sock.recv_multipart(zmq.NOBLOCK), self._on_request)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._sock.close(linger=0)

    def _on_request(self, frames: list[bytes]) -> None:
        self._sock.send_multipart(self.answer(frames))

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """The reply to one ZAP request (ROUTER envelope included)."""
        # [routing id, b"", version, request id, domain, address, identity, mechanism, credentials...]
        head, request = frames[:2], frames[2:]
        if len(request) < 6 or request[0] != b"1.0":
            return [*head, b"1.0", request[1] if len(request) > 1 else b"", b"400", b"malformed ZAP request", b"", b""]
        request_id, address = request[1], request[3].decode(errors="replace")
        creds = parse_address(address)
        if creds is None:
            # not a Unix socket peer: nothing to authorize it by
            log.warning("refusing a connection without Unix credentials (address %r)", address)
            return [*head, b"1.0", request_id, b"400", b"no peer credentials", b"", b""]
        uid, gid, pid = creds
        self.connections += 1
        if not self.policy.serves(uid, gid, pid):
            self.refused += 1
            self._log_refusal(uid, gid, pid)
            return [*head, b"1.0", request_id, b"400", f"uid {uid} is not allowed".encode(), b"", b""]
        self._serial += 1
        peer = Peer(uid, gid, pid, self._serial, served=True)
        return [*head, b"1.0", request_id, b"200", b"OK", peer.user_id().encode(), b""]

    def _log_refusal(self, uid: int, gid: int, pid: int) -> None:
        now = time.monotonic()
        if now - self._logged.get(uid, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            if len(self._logged) > 1024:
                self._logged.clear()
            self._logged[uid] = now
            log.warning(
                "refused a connection from pid=%d uid=%d gid=%d: not an allowed uid or group (%d refusals so far)",
                pid,
                uid,
                gid,
                self.refused,
            )
