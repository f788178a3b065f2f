#!/usr/bin/env python3
"""Sends malformed Ethernet/IPv4/TCP frames towards a listener over a raw AF_PACKET socket.

Usage: malformed_frames.py IFACE SRC_IP DST_IP DST_PORT. The destination MAC is taken from the
neighbour table (connect once first). Prints the number of frames sent. Only for the test topology.
"""
import socket, struct, subprocess, sys

iface, src, dst, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))

neigh = subprocess.run(["ip", "neigh", "show", dst, "dev", iface], capture_output=True, text=True).stdout.split()
dst_mac = mac(neigh[neigh.index("lladdr") + 1])
src_mac = mac(open(f"/sys/class/net/{iface}/address").read().strip())

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data)//2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def ipv4(payload, ihl=5, total=None, options=b""):
    total = total if total is not None else 20 + len(options) + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, 0x4000, 64, 6, 0,
                      socket.inet_aton(src), socket.inet_aton(dst)) + options
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload

def tcp(sport, data_offset=5, options=b"", flags=0x02, payload=b""):
    hdr = struct.pack("!HHIIBBHHH", sport, port, 1000, 0, data_offset << 4, flags, 65535, 0, 0) + options
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr) + len(payload))
    c = csum(pseudo + hdr + payload)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload

eth = dst_mac + src_mac + b"\x08\x00"
frames = [
    eth + ipv4(tcp(40001))[:30],                              # truncated inside the TCP header
    eth + ipv4(tcp(40002))[:12],                              # truncated inside the IPv4 header
    eth + ipv4(tcp(40003), ihl=4),                            # IHL < 5
    eth + ipv4(tcp(40004, data_offset=4)),                    # TCP data offset < 5
    eth + ipv4(tcp(40005, data_offset=15)),                   # data offset past the end
    eth + ipv4(tcp(40006, data_offset=6, options=b"\x02\x0a\x05\xb4")),   # MSS option length 10 runs past the header
    eth + ipv4(tcp(40007, data_offset=6, options=b"\x08\x01\x00\x00")),   # option length 1 (< 2)
    eth + ipv4(tcp(40008), total=2000),                       # IPv4 total length past the frame
]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for f in frames:
    s.send(f)
print(len(frames))
