"""Thin blocking IO around the frame codec: a framed socket, outgoing connections bound to ``--host``,
and a threaded TCP server that owns and stops all its threads.

Used by the ledger's gossip node, the chat node and the relay, so that every socket in the project reads
through the same limits and timeouts.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from p2pchat.foundation.addresses import format_address
from p2pchat.foundation.codec import Frame, Message, Protocol
from p2pchat.foundation.errors import FrameError, PeerUnreachable, UserError
from p2pchat.foundation.lazylog import LazyLogger

log = LazyLogger(__name__)   # logging is imported when a server first logs (start-up time)
RECV_CHUNK = 65536
_Read = TypeVar("_Read", bytes, int)     # what one read gives: the bytes, or how many were written in place
# POSIX: a socket with a timeout is non-blocking underneath, and read()/write() on its descriptor try the transfer
# at once, where socket.recv()/send() would first poll (a second system call per transfer): _recv_now, _send_now.
FD_IO = os.name == "posix"


class FramedSocket:
    """A connected socket that sends and receives whole, schema-checked frames.

    ``recv`` enforces one deadline for a whole frame, so a peer that trickles bytes (slowloris) cannot hold
    a thread longer than the timeout. ``send`` is safe to call from several threads.

    Each direction has its own deadline: every call waits for readiness with ``poll``/``select`` until its own
    deadline and only then reads or writes, so a writer thread sending with a short timeout never shortens the
    wait of a reader thread idling with a long one (the socket's single ``settimeout`` value used to be shared by
    both directions and set by each). The socket's own timeout is set once, here, and never changed: it only
    bounds code that uses ``sock`` directly. ``timeout`` is the default deadline of both directions.
    """

    def __init__(self, sock: socket.socket, protocol: Protocol, *, timeout: float = 30.0) -> None:
        self.sock = sock
        self.protocol = protocol
        self.timeout = timeout
        self._reader = protocol.reader()
        self._ready: list[Message] = []
        self._send_lock = threading.Lock()
        self._closed = False
        sock.settimeout(timeout)
        self.peer: tuple[str, int] = ("?", 0)
        self.local: tuple[str, int] = ("?", 0)
        if sock.family == getattr(socket, "AF_UNIX", None):   # a node's local control socket (ledger/control.py)
            self.peer = self.local = ("local", 0)
            return
        try:
            self.peer = sock.getpeername()[:2]
            self.local = sock.getsockname()[:2]
        except OSError:
            pass
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def peer_text(self) -> str:
        return format_address(*self.peer)

    @property
    def frame_limit(self) -> int:
        """Largest frame accepted from the peer (the protocol's limit unless lowered for this connection)."""
        return self._reader.limit

    @frame_limit.setter
    def frame_limit(self, limit: int) -> None:
        """Set by the owner for this peer (the chat node: small before step 3 verified it, the protocol's limit
        after), so frames that large are expected from it: a large one is then read straight into a buffer of its
        own (:attr:`FrameReader.buffer_limit`). A socket whose limit nobody set (a ledger peer, any stranger)
        buffers frames as their bytes arrive."""
        self._reader.limit = self._reader.buffer_limit = min(limit, self.protocol.max_frame)

    @property
    def buffered_messages(self) -> int:
        """Complete messages already received that the next ``recv`` calls return without reading the socket."""
        return len(self._ready)

    def send(self, type_: str, **fields: Any) -> None:
        self.send_frame(self.protocol.encode(type_, **fields))

    def send_frame(self, frame: Frame | memoryview) -> None:
        """Send pre-encoded frame bytes (already length-prefixed)."""
        with self._send_lock:
            self._write_all(frame)

    def _write_all(self, data: Frame | memoryview) -> None:
        """Write every byte of ``data`` within this direction's deadline; the caller holds ``_send_lock``."""
        deadline = time.monotonic() + self.timeout
        view = memoryview(data)
        try:
            while view:
                sent = _send_now(self.sock, view)       # the socket usually has room: no poll first
                if sent:
                    view = view[sent:]
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not _wait_ready(self.sock, write=True, timeout=remaining):
                    raise PeerUnreachable(f"{self.peer_text} did not take what we sent in time")
        except OSError as exc:
            raise PeerUnreachable(f"could not send to {self.peer_text}: {_os_reason(exc)}") from None

    def send_nowait(self, data: Frame | memoryview) -> int:
        """Write what the socket takes at once, never waiting: returns the number of bytes written (0 when it has
        no room or another thread is sending); raises :class:`PeerUnreachable` when the connection is gone."""
        if not self._send_lock.acquire(blocking=False):
            return 0
        try:
            return _send_now(self.sock, data)
        except OSError as exc:
            raise PeerUnreachable(f"could not send to {self.peer_text}: {_os_reason(exc)}") from None
        finally:
            self._send_lock.release()

    def send_error(self, reason: str) -> None:
        """Best effort: tell the peer why the connection is being closed."""
        try:
            self.send("error", reason=reason[:1000])
        except UserError:
            pass

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; raises :class:`PeerUnreachable` on close or timeout, :class:`FrameError` on bad
        frames. A peer's ``error`` frame is returned like any other message."""
        if self._ready:
            return self._ready.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._ready:
            space = self._reader.space()
            if space is not None:     # a large frame: read straight into its own buffer (the one copy)
                with space:
                    self._ready.extend(self._reader.wrote(self._read_into(deadline, space)))
                continue
            # The rest of a frame is asked for in one read, not in 64 KiB pieces, and no further: the buffer then
            # holds exactly that frame, which the reader decodes without copying it.
            need = self._reader.next_frame_size()
            size = RECV_CHUNK if need is None else max(1, need - self._reader.pending())
            self._ready.extend(self._reader.feed(self._read_some(deadline, size)))
        return self._ready.pop(0)

    def _read_into(self, deadline: float, space: memoryview) -> int:
        """Read what has arrived into ``space`` (at least one byte), waiting at most until ``deadline``."""
        return self._read(deadline, lambda: _recv_into_now(self.sock, space))

    def _read_some(self, deadline: float, size: int = RECV_CHUNK) -> bytes:
        """The next bytes from the socket, waiting at most until ``deadline`` (this direction's own)."""
        return self._read(deadline, lambda: _recv_now(self.sock, size))

    def _read(self, deadline: float, attempt: Callable[[], _Read | None]) -> _Read:
        """What ``attempt`` reads (None: nothing there yet; empty: the peer closed), tried until ``deadline``."""
        while True:
            try:
                got = attempt()     # on a busy stream the bytes are already here: no poll first
                if got is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not _wait_ready(self.sock, write=False, timeout=remaining):
                        raise PeerUnreachable(f"{self.peer_text} did not answer in time")
                    continue      # ready (or a spurious wake-up): try again until the deadline
            except OSError as exc:
                raise PeerUnreachable(f"connection to {self.peer_text} failed: {_os_reason(exc)}") from None
            if not got:
                raise PeerUnreachable(f"{self.peer_text} closed the connection")
            return got

    def discard_buffers(self) -> None:
        """Drop what was received and not returned yet (the caller reads this socket no more): an ended
        connection's memory goes at once, not when the last reference to it does."""
        self._ready = []
        self._reader.release()
        self._reader = self.protocol.reader()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> FramedSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recv_now(sock: socket.socket, size: int) -> bytes | None:
    """Up to ``size`` bytes the socket holds now (``b""``: the peer closed), or None when it holds none; never
    waits. Raises OSError when the connection failed."""
    try:
        if FD_IO and sock.gettimeout() is not None:
            return os.read(sock.fileno(), size)
        if not _wait_ready(sock, write=False, timeout=0):
            return None
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None


def _recv_into_now(sock: socket.socket, space: memoryview) -> int | None:
    """:func:`_recv_now` into ``space``: the number of bytes written (0: the peer closed), or None."""
    try:
        if FD_IO and sock.gettimeout() is not None:
            return os.readv(sock.fileno(), [space])
        if not _wait_ready(sock, write=False, timeout=0):
            return None
        return sock.recv_into(space)
    except (BlockingIOError, InterruptedError):
        return None


def _send_now(sock: socket.socket, data: Frame | memoryview) -> int:
    """Write what the socket takes now (0 when it has no room); never waits. Raises OSError when the
    connection failed."""
    try:
        if FD_IO and sock.gettimeout() is not None:
            return os.write(sock.fileno(), data)
        if not _wait_ready(sock, write=True, timeout=0):
            return 0
        return sock.send(data)
    except (BlockingIOError, InterruptedError):
        return 0


def _wait_ready(sock: socket.socket, *, write: bool, timeout: float) -> bool:
    """Wait until ``sock`` can be read (or written) or ``timeout`` seconds pass; True when it is ready (an error
    or a closed connection count as ready: the next recv/send reports them)."""
    fd = sock.fileno()
    if fd < 0:
        raise OSError(9, "the connection is closed")
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT if write else select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000) + 1)))
    readable, writable, failed = select.select([] if write else [sock], [sock] if write else [], [sock], timeout)
    return bool(readable or writable or failed)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def connect(ip: str, port: int, protocol: Protocol, *, source_ip: str | None = None,
            timeout: float = 5.0) -> FramedSocket:
    """Open a TCP connection to ``ip:port``, bound to ``source_ip`` first so the peer sees that address."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if source_ip:
            sock.bind((source_ip, 0))
        sock.settimeout(timeout)
        sock.connect((ip, port))
    except TimeoutError:
        sock.close()
        raise PeerUnreachable(f"{format_address(ip, port)} did not answer within {timeout:g} s") from None
    except OSError as exc:
        sock.close()
        if source_ip and exc.errno in (99, 49):  # EADDRNOTAVAIL (Linux, macOS)
            raise PeerUnreachable(f"this machine has no address {source_ip} to connect from") from None
        raise PeerUnreachable(f"cannot connect to {format_address(ip, port)}: {_os_reason(exc)}") from None
    return FramedSocket(sock, protocol, timeout=timeout)


Handler = Callable[[FramedSocket], None]


class FrameServer:
    """A threaded TCP server: one thread per connection, a bound on connections, and a ``close()`` that
    stops and joins every thread it started.

    The handler owns the connection; the server closes it when the handler returns. A :class:`UserError`
    from the handler is logged and sent to the peer as an ``error`` frame; the server keeps serving others.
    """

    def __init__(self, host: str, port: int, protocol: Protocol, handler: Handler, *, name: str,
                 max_connections: int = 256, timeout: float = 30.0,
                 max_per_ip: int | None = None, listener: socket.socket | None = None) -> None:
        """``listener``, when given, is an already bound socket (e.g. a Unix socket) used instead of binding
        ``host:port``."""
        self.host = host
        self.protocol = protocol
        self.handler = handler
        self.name = name
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.timeout = timeout
        if listener is not None:
            self._listener = listener
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._listener = socket.socket(family, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self._listener.bind((host, port))
            except OSError as exc:
                self._listener.close()
                raise PeerUnreachable(f"{name}: cannot listen on {format_address(host, port)}: "
                                      f"{_os_reason(exc)}") from None
        self._listener.listen(128)
        self.port: int = 0 if listener is not None else self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: dict[FramedSocket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"{name}-accept")

    def start(self) -> FrameServer:
        self._accept_thread.start()
        return self

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)  # e.g. EMFILE: back off instead of spinning
                continue
            conn = FramedSocket(sock, self.protocol, timeout=self.timeout)
            with self._lock:
                refused = self._refusal(conn.peer[0])
                if refused is None:
                    thread = threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-conn")
                    self._conns[conn] = thread
            if refused is not None:
                log.warning("%s: refused %s: %s", self.name, conn.peer[0], refused)
                conn.send_error(refused)
                conn.close()
                continue
            thread.start()

    def _refusal(self, ip: str) -> str | None:
        if len(self._conns) >= self.max_connections:
            return "this node is at its connection limit; try again later"
        if self.max_per_ip is not None:
            same = sum(1 for c in self._conns if c.peer[0] == ip)
            if same >= self.max_per_ip:
                return f"too many connections from {ip}"
        return None

    def _serve(self, conn: FramedSocket) -> None:
        try:
            self.handler(conn)
        except FrameError as exc:
            log.warning("%s: bad frame from %s: %s", self.name, conn.peer_text, exc)
            conn.send_error(str(exc))
        except PeerUnreachable as exc:
            log.info("%s: %s", self.name, exc)
        except UserError as exc:
            log.warning("%s: %s: %s", self.name, conn.peer_text, exc)
            conn.send_error(str(exc))
        finally:
            conn.close()
            with self._lock:
                self._conns.pop(conn, None)

    def close(self) -> None:
        """Stop accepting, close every connection and join every thread."""
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        if self._accept_thread.is_alive():
            self._accept_thread.join()
        with self._lock:
            conns = list(self._conns.items())
        for conn, _ in conns:
            conn.close()
        current = threading.current_thread()
        for _, thread in conns:
            if thread is not current and thread.ident is not None:
                thread.join()
