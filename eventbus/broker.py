"""The daemon's ROUTER socket on a Unix path, driven from an asyncio loop.

The socket is a plain (blocking-API) pyzmq socket whose ``zmq.FD`` is
registered with the loop: one callback drains every queued frame in bounded
batches. This is ~3x faster than one ``await`` per message (see
PLATFORM-NOTES). The FD is edge-triggered, so ``zmq.EVENTS`` is re-checked
after every drain and after sends, or the loop could stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

import zmq

from eventbus._loopsock import LoopReader
from eventbus.errors import ConfigError, SocketInUse
from eventbus.paths import endpoint
from eventbus.peers import AccessPolicy, Peer, PeerCache
from eventbus.wire import batches
from eventbus.zap import DOMAIN, ZapHandler

log = logging.getLogger(__name__)

#: first and longest retry interval for peers whose ZeroMQ pipe was full
FLUSH_RETRY_S = 0.002
FLUSH_RETRY_MAX_S = 0.1
#: messages libzmq buffers per peer before a send raises zmq.Again and our
#: byte-bounded queue takes over. Kept small because libzmq counts messages,
#: not bytes: this many frames of max_message_size is the worst case per peer.
PIPE_HWM = 64
#: inbound frames libzmq buffers per peer before it stops reading that peer
RECV_HWM = 256
#: peers remembered as reading batch frames (past it the memory starts over)
MAX_BATCHING_PEERS = 65_536

OnMessage = Callable[[bytes, list[bytes], Peer], None]


def _unset(identity: bytes, frames: list[bytes], peer: Peer) -> None:
    raise RuntimeError("Broker.start() was not called")


class Broker:
    """Owns the ROUTER socket: bind safely, receive in batches, send without ever blocking.

    ``on_message(identity, frames, peer)`` is called for each inbound message,
    with the credentials of the connection it came on. Outbound messages go
    straight to ZeroMQ; when a peer's pipe is full they wait in that peer's
    queue, bounded in count and in bytes, so one slow peer never stalls the
    rest nor takes the daemon's memory.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_message_size: int,
        peer_queue_limit: int,
        max_pending_bytes_per_peer: int,
        policy: AccessPolicy,
    ) -> None:
        self.path = path
        self._on_message: OnMessage = _unset
        self._on_unreachable: Callable[[bytes], None] | None = None
        self._on_undelivered: Callable[[bytes, int], None] | None = None
        self._max_message_size = max_message_size
        self._peer_queue_limit = peer_queue_limit
        self._peer_byte_limit = max_pending_bytes_per_peer
        self._policy = policy
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._zap: ZapHandler | None = None
        self._peers = PeerCache()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock_fd: int | None = None
        self._queues: dict[bytes, deque[bytes]] = {}
        self._queued_bytes: dict[bytes, int] = {}
        self._overflowing: set[bytes] = set()
        self._reader: LoopReader[list[zmq.Frame]] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_delay = FLUSH_RETRY_S
        #: peers that read batch frames, and what they were sent this loop iteration (sent as one frame)
        self._batching: set[bytes] = set()
        self._outbox: dict[bytes, list[bytes]] = {}
        self._outbox_scheduled = False
        self.received = 0
        self.sent = 0
        self.dropped = 0
        self.unreachable = 0

    # ---- lifecycle -----------------------------------------------------

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: OnMessage,
        on_unreachable: Callable[[bytes], None] | None = None,
        on_undelivered: Callable[[bytes, int], None] | None = None,
    ) -> None:
        """Lock the path, bind with a restrictive umask, and start handing messages to ``on_message``.

        ``on_unreachable(identity)`` is called when a peer is found gone; ``on_undelivered(identity, n)``
        when ``n`` messages that :meth:`send` had accepted for a batching peer could not be delivered.
        """
        self._on_message = on_message
        self._on_unreachable = on_unreachable
        self._on_undelivered = on_undelivered
        self._prepare_directory()
        self._take_lock()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        # the ZAP handler must exist before the first peer connects
        zap = ZapHandler(ctx, self._policy)
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ZAP_DOMAIN, DOMAIN)
        # unknown or full peers raise instead of silently dropping
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # a reconnecting collector (stable identity) takes over its old pipe.
        # Never add ZMTP heartbeats (HEARTBEAT_IVL) to this socket: libzmq 4.3.5
        # aborts the process when a handed-over peer's old connection then dies.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, PIPE_HWM)
        sock.setsockopt(zmq.RCVHWM, RECV_HWM)
        sock.setsockopt(zmq.LINGER, 500)
        # the transport drops a peer sending frames far past the limit; frames
        # up to twice the limit reach the decoder, which answers with an error
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * self._max_message_size)
        old_umask = os.umask(0o117)  # the socket is born 0660, never world-accessible
        try:
            if self.path.is_socket() or self.path.is_symlink():
                self.path.unlink()  # stale socket of a dead daemon: we hold the lock
            elif self.path.exists():
                raise ConfigError(f"{self.path} exists and is not a socket; not replacing it")
            sock.bind(endpoint(self.path))
            os.chmod(self.path, 0o660)
        except (zmq.ZMQError, OSError, ConfigError) as exc:
            sock.close(linger=0)
            zap.close()
            ctx.term()
            self._release_lock()
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot bind {self.path}: {getattr(exc, 'strerror', None) or exc}") from exc
        finally:
            os.umask(old_umask)
        self._ctx, self._sock, self._loop, self._zap = ctx, sock, loop, zap
        zap.start(loop)
        self._reader = LoopReader(loop, sock, lambda: sock.recv_multipart(zmq.NOBLOCK, copy=False), self._on_frames)
        log.info("listening on %s", self.path)

    def close(self) -> None:
        """Stop reading, flush what can be flushed, close and unlink the socket."""
        if self._sock is None:
            return
        assert self._loop is not None and self._ctx is not None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_outbox()
        self._flush()
        self._sock.close(linger=500)
        if self._zap is not None:
            self._zap.close()
            self._zap = None
        self._ctx.term()
        self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._release_lock()

    def _prepare_directory(self) -> None:
        directory = self.path.parent
        try:
            if not directory.exists():
                directory.mkdir(mode=0o750, parents=True)
                os.chmod(directory, 0o750)
        except OSError as exc:
            raise ConfigError(f"cannot create socket directory {directory}: {exc.strerror}") from exc
        if not directory.is_dir():
            raise ConfigError(f"socket directory {directory} is not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"socket directory {directory} is not writable")
        st = directory.stat()
        if st.st_uid not in (os.getuid(), 0):
            raise ConfigError(f"socket directory {directory} belongs to uid {st.st_uid}, not to us")
        if st.st_mode & 0o002 and not st.st_mode & 0o1000:
            raise ConfigError(f"socket directory {directory} is world-writable without the sticky bit")

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open lock file {lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SocketInUse(f"another eventbusd is serving {self.path} (lock {lock_path} is held)") from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- receiving -----------------------------------------------------

    def _on_frames(self, frames: list[zmq.Frame]) -> None:
        self.received += 1
        identity = frames[0].bytes
        body = [f.bytes for f in frames[1:]]
        # the ZAP handler stamped the connection; libzmq repeats it on every frame
        peer = self._peers.get(str(frames[-1].get("User-Id")))
        try:
            self._on_message(identity, body, peer)
        except Exception:  # a handler bug must not take the daemon down
            log.exception("error handling a message from peer %r (%s)", identity, peer.describe())

    def counters(self) -> dict[str, int]:
        """Transport counters for ``stats``: connections vetted and refused, messages dropped."""
        zap = self._zap
        return {
            "connections": zap.connections if zap is not None else 0,
            "connections_refused": zap.refused if zap is not None else 0,
            "messages_dropped": self.dropped,
        }

    def pending(self) -> tuple[int, int]:
        """``(bytes, peers)``: bytes queued here for peers whose pipe is full, and how many such peers."""
        return sum(self._queued_bytes.values()), len(self._queues)

    def _recheck(self) -> None:
        """Schedule a read if frames wait: any send or receive may have consumed the FD's edge."""
        if self._reader is not None:
            self._reader.recheck()

    # ---- sending -------------------------------------------------------

    def batch_peer(self, identity: bytes) -> None:
        """``identity`` reads batch frames: what it is sent in one loop iteration goes out as one frame."""
        if len(self._batching) >= MAX_BATCHING_PEERS:
            self._batching.clear()  # gone peers are never reported: start over (a peer only loses batching)
        self._batching.add(identity)

    def send(self, identity: bytes, payload: bytes) -> bool:
        """Queue ``payload`` (one encoded envelope) for a peer; False if it was dropped (peer gone or its
        queue full). To a batching peer it is sent at the end of the loop iteration, with what else it is
        sent meanwhile; a failure then is reported to ``on_undelivered``."""
        if identity not in self._batching and identity not in self._outbox:
            return self._send_frame(identity, payload)
        if self._sock is None:
            return False
        box = self._outbox.get(identity)
        if box is None:
            self._outbox[identity] = [payload]
        else:
            box.append(payload)
        if not self._outbox_scheduled and self._loop is not None:
            self._outbox_scheduled = True
            self._loop.call_soon(self._flush_outbox)
        return True

    def _flush_outbox(self) -> None:
        """Send what batching peers were sent this iteration: as few frames as the size limit allows."""
        self._outbox_scheduled = False
        boxes, self._outbox = self._outbox, {}
        for identity, parts in boxes.items():
            frames = list(batches(parts, self._max_message_size))
            for at, (frame, count) in enumerate(frames):
                if not self._send_frame(identity, frame, count):
                    if self._on_undelivered is not None:  # this frame, and the ones after it
                        self._on_undelivered(identity, sum(n for _, n in frames[at:]))
                    break

    def _send_frame(self, identity: bytes, payload: bytes, messages: int = 1) -> bool:
        sock = self._sock
        if sock is None:
            return False
        queue = self._queues.get(identity)
        if queue is not None:
            queued = self._queued_bytes[identity] + len(payload)
            if len(queue) >= self._peer_queue_limit or queued > self._peer_byte_limit:
                self.dropped += messages
                if identity not in self._overflowing:  # once per episode, not per dropped message
                    self._overflowing.add(identity)
                    log.warning(
                        "send queue of peer %r is full (%d messages, %d bytes); dropping what it is sent",
                        identity,
                        len(queue),
                        self._queued_bytes[identity],
                    )
                return False
            queue.append(payload)
            self._queued_bytes[identity] = queued
            return True
        try:
            sock.send_multipart((identity, payload), zmq.NOBLOCK)
        except zmq.Again:
            self._queues[identity] = deque((payload,))
            self._queued_bytes[identity] = len(payload)
            self._schedule_flush()
            return True
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._peer_gone(identity)
            return False
        finally:
            self._recheck()
        self.sent += 1
        return True

    def _peer_gone(self, identity: bytes) -> None:
        self.unreachable += 1
        self._batching.discard(identity)
        self._queues.pop(identity, None)
        self._queued_bytes.pop(identity, None)
        self._overflowing.discard(identity)
        if self._on_unreachable is not None:
            self._on_unreachable(identity)

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_later(self._flush_delay, self._flush)

    def _flush(self) -> None:
        """Retry queued sends; runs only from its timer, backing off while no peer makes progress."""
        self._flush_handle = None
        sock = self._sock
        if sock is None:
            return
        sent_before = self.sent
        try:
            for identity in list(self._queues):
                self._flush_peer(sock, identity)
        finally:
            self._recheck()
        progressed = self.sent > sent_before
        self._flush_delay = FLUSH_RETRY_S if progressed else min(self._flush_delay * 2, FLUSH_RETRY_MAX_S)
        if self._queues:
            self._schedule_flush()

    def _flush_peer(self, sock: zmq.Socket[bytes], identity: bytes) -> None:
        queue = self._queues[identity]
        try:
            while queue:
                sock.send_multipart((identity, queue[0]), zmq.NOBLOCK)
                self._queued_bytes[identity] -= len(queue.popleft())
                self.sent += 1
        except zmq.Again:
            return
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._peer_gone(identity)
            return
        del self._queues[identity]
        del self._queued_bytes[identity]
        self._overflowing.discard(identity)
