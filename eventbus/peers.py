"""Who is on the other end of a connection, and what they may do.

On ``ipc://`` the daemon's ZAP handler learns each connection's Unix
credentials (libzmq reads them with ``SO_PEERCRED`` and passes them as the
address ``localhost:UID:GID:PID``). The handler stamps every accepted
connection with a ``User-Id`` of ``UID:GID:PID:SERIAL``, which libzmq then
attaches to every frame received on that connection. The serial tells two
connections apart even when they use the same routing id (a collector and
its twin), which the routing id alone cannot.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

#: parsed User-Id strings kept; cleared when full (connections come and go)
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Peer:
    """The credentials of one connection; ``conn`` is unique per connection for the daemon's lifetime."""

    uid: int
    gid: int
    pid: int
    conn: int
    #: whether the access policy serves this connection (decided once, when it connected)
    served: bool

    def describe(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"

    def user_id(self) -> str:
        """The ``User-Id`` the ZAP handler gives the connection (parsed back by :class:`PeerCache`)."""
        return f"{self.uid}:{self.gid}:{self.pid}:{self.conn}:{int(self.served)}"


#: a frame without credentials: only possible on a transport without ZAP, never served
UNKNOWN = Peer(uid=-1, gid=-1, pid=0, conn=0, served=False)


def parse_address(address: str) -> tuple[int, int, int] | None:
    """(uid, gid, pid) from a ZAP/Peer-Address ``localhost:UID:GID:PID``; None if it is not one."""
    parts = address.rsplit(":", 3)
    if len(parts) != 4:
        return None
    try:
        uid, gid, pid = (int(p) for p in parts[1:])
    except ValueError:
        return None
    return uid, gid, pid


class PeerCache:
    """Turns the ``User-Id`` string on a frame into a :class:`Peer`, parsing each string once."""

    def __init__(self) -> None:
        self._known: dict[str, Peer] = {}

    def get(self, user_id: str | None) -> Peer:
        if not user_id:
            return UNKNOWN
        peer = self._known.get(user_id)
        if peer is None:
            peer = self._parse(user_id)
            if len(self._known) >= _CACHE_LIMIT:
                self._known.clear()
            self._known[user_id] = peer
        return peer

    @staticmethod
    def _parse(user_id: str) -> Peer:
        try:
            uid, gid, pid, conn, served = (int(p) for p in user_id.split(":"))
        except ValueError:
            return UNKNOWN
        return Peer(uid, gid, pid, conn, served == 1)


def supplementary_groups(pid: int) -> frozenset[int]:
    """The supplementary groups of a live process (from /proc); empty when they cannot be read."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Groups:"):
                return frozenset(int(g) for g in line.split()[1:])
    return frozenset()


def process_alive(pid: int) -> bool:
    """True while a process with ``pid`` exists (it may belong to another uid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Which Unix users are served, and which may use admin verbs.

    Served: the daemon's own uid, root, ``allowed_uids``, and members
    (primary or supplementary group) of ``allowed_gids``. Admin: the daemon's
    uid, root and ``admin_uids``.
    """

    own_uid: int
    allowed_uids: frozenset[int] = field(default_factory=frozenset)
    allowed_gids: frozenset[int] = field(default_factory=frozenset)
    admin_uids: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def build(
        cls, own_uid: int, allowed_uids: Iterable[int], allowed_gids: Iterable[int], admin_uids: Iterable[int]
    ) -> AccessPolicy:
        return cls(own_uid, frozenset(allowed_uids), frozenset(allowed_gids), frozenset(admin_uids))

    def _trusted(self, uid: int) -> bool:
        return uid in (self.own_uid, 0)

    def serves(self, uid: int, gid: int, pid: int) -> bool:
        """Whether a connection with these credentials is served at all (checked once per connection)."""
        if self._trusted(uid) or uid in self.allowed_uids:
            return True
        if not self.allowed_gids:
            return False
        return gid in self.allowed_gids or bool(self.allowed_gids & supplementary_groups(pid))

    def is_admin(self, peer: Peer) -> bool:
        return self._trusted(peer.uid) or peer.uid in self.admin_uids
