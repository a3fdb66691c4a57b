"""Traps for host addresses that are libvirt URIs: programs that leave a
marker file when run, and listeners (TCP and a Unix socket) that record any
connection. An engine that refuses URIs trips none of them.

Create Traps from inside the private network namespace: the listeners bind
there (127.0.0.1:1 and 127.0.6.11 belong to nobody else)."""
from __future__ import annotations

import os
import socket
import threading
import time


class Traps:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "traps")
        os.makedirs(self.dir, exist_ok=True)
        self.marker = os.path.join(self.dir, "program-was-run")
        self.ext_script = self._script("ext-command.sh")
        self.ssh_script = self._script("ssh-command.sh")
        self.unix_socket = os.path.join(self.dir, "libvirt-sock")
        self.tcp_libvirt = ("127.0.6.11", 16509)
        self.tcp_ssh = ("127.0.6.11", 2222)
        self.tcp_port_one = ("127.0.0.1", 1)
        self.connections = []       # (what, when)
        self._socks = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _script(self, name):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\necho "{name} $*" >> {self.marker}\n')
        os.chmod(path, 0o755)
        return path

    def start(self):
        for addr in (self.tcp_libvirt, self.tcp_ssh, self.tcp_port_one):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
            self._listen(s, f"tcp {addr[0]}:{addr[1]}")
        if os.path.exists(self.unix_socket):
            os.unlink(self.unix_socket)
        u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        u.bind(self.unix_socket)
        self._listen(u, f"unix {self.unix_socket}")
        return self

    def _listen(self, sock, what):
        sock.listen(16)
        sock.settimeout(0.5)
        self._socks.append(sock)
        threading.Thread(target=self._accept, args=(sock, what), daemon=True, name=f"trap {what}").start()

    def _accept(self, sock, what):
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.connections.append((what, time.time()))
            conn.close()

    def tripped(self):
        """Everything that happened so far: programs run, connections made."""
        out = []
        if os.path.exists(self.marker):
            with open(self.marker) as f:
                out += [f"program run: {line.strip()}" for line in f if line.strip()]
        with self._lock:
            out += [f"connection to {what}" for what, _ in self.connections]
        return out

    def stop(self):
        self._stop.set()
        for s in self._socks:
            s.close()
        if os.path.exists(self.unix_socket):
            os.unlink(self.unix_socket)
