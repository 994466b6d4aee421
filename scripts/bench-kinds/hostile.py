#!/usr/bin/env python3
"""The service's CPU for each request a hostile caller can send, as scripts/bench measures it.

    hostile.py

Sends each kind of request many times, each on a new connection (those without a key at most
800 a second, under the budget past which the service answers them late), and prints one line
per kind:
its name, the service's CPU a request in ms, and the status it was answered with. Needs
ORDERS_BASE_URL, ORDERS_API_KEY and ORDERS_SERVER_PID (scripts/with-server sets them).
"""

import os
import socket
import time

HOST, PORT = os.environ["ORDERS_BASE_URL"].removeprefix("http://").rsplit(":", 1)
KEY = os.environ["ORDERS_API_KEY"]
PID = int(os.environ["ORDERS_SERVER_PID"])
TICKS = os.sysconf("SC_CLK_TCK")

# Under the service's budget of refusals answered at once (1,000 a second by default), so that
# what is measured is what a refusal costs, not how long a paced one waits.
ANONYMOUS_PER_SECOND = 800

# A 30,000-character key holding 15,000 zeros: 60 KiB.
DEEP = '{"' + "k" * 30000 + '": [' + ",".join(["0"] * 15000) + "]}"


def cpu_seconds():
    fields = open(f"/proc/{PID}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def exchange(path, body, with_key):
    connection = socket.create_connection((HOST, int(PORT)))
    head = f"POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    if with_key:
        head += f"authorization: Bearer {KEY}\r\n"
    head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    try:
        connection.sendall((head + body).encode())
    except OSError:
        pass  # answered and closed before the whole body was sent
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except OSError:
        pass
    connection.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace").removeprefix("HTTP/1.1 ")


def main():
    for name, path, body, with_key, count in [
        ("anonymous, unknown route, no body", "/nowhere", "", False, 3000),
        ("anonymous, unknown route, 60 KiB worst-case body", "/nowhere", DEEP, False, 3000),
        ("anonymous, POST /orders, 60 KiB worst-case body", "/orders", DEEP, False, 3000),
        ("with a key, POST /orders, 60 KiB worst-case body", "/orders", DEEP, True, 500),
    ]:
        before = cpu_seconds()
        started = time.monotonic()
        statuses = set()
        for sent in range(count):
            if not with_key:
                ahead = sent / ANONYMOUS_PER_SECOND - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            statuses.add(exchange(path, body, with_key))
        per_request_ms = (cpu_seconds() - before) / count * 1000
        print(f"{name}\t{per_request_ms:.3f}\t{', '.join(sorted(statuses))}")


if __name__ == "__main__":
    main()
