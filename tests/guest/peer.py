#!/usr/bin/env python3
"""Peer-side traffic tools for the lancet test guest (run inside the test's network namespace).

  peer.py udp-echo IP PORT COUNT SIZE      UDP ping-pong, one outstanding; prints RTT percentiles
  peer.py send IFACE DST_MAC COUNT [SIZE]  raw AF_PACKET frames to DST_MAC (bounded, paced bursts)
  peer.py count IFACE SRC_MAC COUNT SECS   counts UDP-to-port-9 frames from SRC_MAC until COUNT or SECS
"""
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_EXPERIMENTAL = 0x88B5


def mac_bytes(text):
    return bytes(int(part, 16) for part in text.split(":"))


def iface_mac(iface):
    with open(f"/sys/class/net/{iface}/address") as f:
        return mac_bytes(f.read().strip())


def percentile(sorted_values, fraction):
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def udp_echo(ip, port, count, size):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    rtts, lost, bad = [], 0, 0
    for i in range(count):
        payload = struct.pack("!I", i) + bytes((i + k) & 0xFF for k in range(size - 4))
        start = time.perf_counter_ns()
        sock.sendto(payload, (ip, port))
        try:
            while True:
                data, _ = sock.recvfrom(4096)
                if data[:4] == payload[:4]:
                    break
        except socket.timeout:
            lost += 1
            continue
        rtts.append((time.perf_counter_ns() - start) / 1000.0)
        if data != payload:
            bad += 1
    rtts.sort()
    if rtts:
        print(f"udp-echo size={size} sent={count} ok={len(rtts)} lost={lost} bad={bad} "
              f"rtt_us p50={percentile(rtts, 0.5):.1f} p90={percentile(rtts, 0.9):.1f} "
              f"p99={percentile(rtts, 0.99):.1f} max={rtts[-1]:.1f}")
    else:
        print(f"udp-echo size={size} sent={count} ok=0 lost={lost}")
    return 0 if lost == 0 and bad == 0 else 1


def send(iface, dst_mac, count, size=60):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    header = mac_bytes(dst_mac) + iface_mac(iface) + struct.pack("!H", ETH_P_EXPERIMENTAL)
    burst, sent = 16, 0
    while sent < count:
        for _ in range(min(burst, count - sent)):
            frame = header + struct.pack("!I", sent) + bytes(size - len(header) - 4)
            sock.send(frame)
            sent += 1
        time.sleep(0.001)
    print(f"send frames={sent} size={size}")
    return 0


def count(iface, src_mac, wanted, seconds):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
    sock.bind((iface, 0))
    sock.settimeout(0.5)
    src = mac_bytes(src_mac)
    seen, deadline = 0, time.monotonic() + seconds
    while seen < wanted and time.monotonic() < deadline:
        try:
            frame = sock.recv(4096)
        except socket.timeout:
            continue
        if (len(frame) >= 42 and frame[6:12] == src and frame[12:14] == b"\x08\x00"
                and frame[23] == 17 and frame[36:38] == b"\x00\x09"):
            seen += 1
    print(f"count frames={seen}")
    return 0 if seen >= wanted else 1


def main(argv):
    if len(argv) >= 5 and argv[0] == "udp-echo":
        return udp_echo(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
    if len(argv) >= 4 and argv[0] == "send":
        return send(argv[1], argv[2], int(argv[3]), int(argv[4]) if len(argv) > 4 else 60)
    if len(argv) >= 5 and argv[0] == "count":
        return count(argv[1], argv[2], int(argv[3]), float(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
