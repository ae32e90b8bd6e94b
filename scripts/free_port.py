#!/usr/bin/env python3
"""A free TCP port for a private EPMD, chosen below the kernel's ephemeral
range: a port the kernel hands out for bind(0) could be given to another
socket (a node's own listener, a client's connection) between our pick and
the EPMD's bind; one below the range is only taken by someone asking for it.

  python3 scripts/free_port.py      prints the port
  from free_port import free_port   (perf/run, perf/icount)
"""
import random
import socket


def free_port():
    lo = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    base, span = (lo - 10000, 10000) if lo > 12000 else (1024, max(lo - 1024, 1))
    for _ in range(1000):
        port = base + random.randrange(span)
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below the ephemeral range (from {lo})")


if __name__ == "__main__":
    print(free_port())
