#!/usr/bin/env python3
"""A seeded netem substitute: forwards Ethernet frames between two interfaces of one namespace
and impairs each direction with loss, reordering (by holding a frame back) and duplication.

This kernel has no sch_netem, so the test topology puts this bridge in a namespace between the
client and the proxy when a test asks for impairment. Usage:

    impair.py IF_A IF_B SEED A2B B2A

where A2B and B2A are "loss,reorder,duplicate,hold_ms" (percentages; hold_ms is how long a
reordered frame is held back). Frames the bridge itself sent are not forwarded again. Runs until
killed; on SIGTERM prints its counters as one JSON line on stdout.
"""
import heapq, json, random, select, signal, socket, sys, time

PACKET_OUTGOING = 4
if_a, if_b, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)

def spec(s):
    loss, reorder, dup, hold = (float(x) for x in s.split(","))
    return loss / 100, reorder / 100, dup / 100, hold / 1000

def sock(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
    s.setsockopt(socket.SOL_SOCKET, 32, 16 << 20)  # SO_SNDBUFFORCE
    s.bind((ifname, 0))
    s.setblocking(False)
    return s

a, b = sock(if_a), sock(if_b)
route = {a.fileno(): (a, b, spec(sys.argv[4]), "a2b"), b.fileno(): (b, a, spec(sys.argv[5]), "b2a")}
counts = {d: {"forwarded": 0, "lost": 0, "reordered": 0, "duplicated": 0} for d in ("a2b", "b2a")}
held = []  # (due, seq, out_socket, frame)
seq = 0
stop = False

def on_term(*_):
    global stop
    stop = True

signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)

def send(out, frame):
    try:
        out.send(frame)
    except (BlockingIOError, OSError):
        pass

poller = select.poll()
poller.register(a, select.POLLIN)
poller.register(b, select.POLLIN)
while not stop:
    now = time.monotonic()
    while held and held[0][0] <= now:
        _, _, out, frame = heapq.heappop(held)
        send(out, frame)
    timeout = max(0, (held[0][0] - now) * 1000) if held else 100
    try:
        events = poller.poll(timeout)
    except InterruptedError:
        continue
    for fd, _ in events:
        src, out, (loss, reorder, dup, hold), d = route[fd]
        for _ in range(256):
            try:
                frame, addr = src.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            c = counts[d]
            if rng.random() < loss:
                c["lost"] += 1
                continue
            copies = 2 if rng.random() < dup else 1
            c["duplicated"] += copies - 1
            for _ in range(copies):
                if rng.random() < reorder:
                    c["reordered"] += 1
                    seq += 1
                    heapq.heappush(held, (time.monotonic() + hold, seq, out, frame))
                else:
                    send(out, frame)
                c["forwarded"] += 1
print(json.dumps(counts), flush=True)
