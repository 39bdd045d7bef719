"""A name resolver a test controls, for the connection-time address checks (DNS rebinding):
``socket.getaddrinfo`` answers the given names with the given addresses in turn, and no
connection leaves for anything but loopback, whatever the code under test does."""

from __future__ import annotations

import socket


class ControlledResolver:
    """A resolver the test controls: ``socket.getaddrinfo`` answers these names in turn (the
    last answer repeats), and connections leave only for loopback."""

    def __init__(self, monkeypatch, answers: dict[str, list[str]]) -> None:
        self.asked: list[str] = []
        self.connected: list[str] = []
        real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

        def getaddrinfo(host, port, *args, **kwargs):
            if host in answers:
                self.asked.append(host)
                address = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
                return real_getaddrinfo(address, port, *args, **kwargs)
            return real_getaddrinfo(host, port, *args, **kwargs)

        def create_connection(address, *args, **kwargs):
            self.connected.append(address[0])
            if not address[0].startswith("127."):  # nothing leaves this machine, whatever runs
                raise ConnectionRefusedError(f"test resolver: {address[0]} is not loopback")
            return real_connect(address, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", create_connection)
