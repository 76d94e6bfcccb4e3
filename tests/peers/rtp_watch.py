#!/usr/bin/env python3
"""Watches the RTP sent to one address on `lo` for a while and says, per stream (SSRC), what
a receiver was given: packets, sequence-number breaks, timestamps that went backwards, and the
timestamp span against the wall-clock span. Only RTP headers are read: SRTP encrypts the
payload, not the header.

An AF_PACKET socket sees each packet as it leaves (before an nftables input rule drops it), so
a policed path still shows everything the sender sent. Needs CAP_NET_RAW (the tests run it
as root in their own network namespace). Prints `{"ready": true}` once listening, then one
JSON object when the time is up.
"""

import argparse
import ctypes
import json
import socket
import struct
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26


def only_udp_leaving_for(sock, address):
    """A classic BPF filter on the socket: the kernel hands over outgoing IPv4 UDP packets to
    `address` only (everything else on `lo` would cost this script a wakeup each)."""
    destination = struct.unpack("!I", socket.inet_aton(address))[0]
    program = [
        (0x30, 0, 0, 0xFFFFF004),  # ldb pkttype (SKF_AD_OFF + SKF_AD_PKTTYPE)
        (0x15, 0, 7, PACKET_OUTGOING),
        (0x28, 0, 0, 12),  # ldh ethertype
        (0x15, 0, 5, 0x0800),
        (0x30, 0, 0, 23),  # ldb IP protocol
        (0x15, 0, 3, 17),
        (0x20, 0, 0, 30),  # ld IP destination
        (0x15, 0, 1, destination),
        (0x06, 0, 0, 0xFFFF),  # take it
        (0x06, 0, 0, 0),  # leave it
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    return code  # the kernel copied it; kept alive anyway until the socket is


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--to", required=True, help="IPv4 address the packets go to")
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    target = socket.inet_aton(args.to)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    _program = only_udp_leaving_for(sock, args.to)
    sock.bind(("lo", 0))
    sock.settimeout(0.2)
    print(json.dumps({"ready": True}), flush=True)
    streams = {}
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        try:
            data, address = sock.recvfrom(65535)
        except socket.timeout:
            continue
        now = time.monotonic()
        # Once per packet: as it leaves. IPv4 over lo's (all-zero) Ethernet header.
        if address[2] != PACKET_OUTGOING or len(data) < 14 + 20 + 8 + 12:
            continue
        if data[12:14] != b"\x08\x00":
            continue
        ip = data[14:]
        if ip[9] != 17 or ip[16:20] != target:
            continue
        rtp = ip[(ip[0] & 0x0F) * 4 + 8:]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:
            continue
        payload_type = rtp[1] & 0x7F
        if 64 <= payload_type <= 95:
            continue  # RTCP (200–206 read with the marker bit), not RTP
        seq, timestamp, ssrc = struct.unpack("!HII", rtp[2:12])
        s = streams.setdefault(ssrc, {
            "ssrc": ssrc, "pt": payload_type, "packets": 0, "bytes": 0, "seq_breaks": 0,
            "ts_backwards": 0, "ts_span": 0, "first_at": now, "last_at": now,
            "last_seq": None, "last_ts": None,
        })
        s["packets"] += 1
        s["bytes"] += len(rtp)
        s["last_at"] = now
        if s["last_seq"] is not None and seq != (s["last_seq"] + 1) & 0xFFFF:
            s["seq_breaks"] += 1
        s["last_seq"] = seq
        if s["last_ts"] is not None:
            step = (timestamp - s["last_ts"]) & 0xFFFFFFFF
            if step >= 0x80000000:
                s["ts_backwards"] += 1
            else:
                s["ts_span"] += step
        s["last_ts"] = timestamp
    for s in streams.values():
        s["wall_span"] = s["last_at"] - s["first_at"]
        for key in ("first_at", "last_at", "last_seq", "last_ts"):
            del s[key]
    print(json.dumps({"streams": sorted(streams.values(), key=lambda s: -s["bytes"])}),
          flush=True)


if __name__ == "__main__":
    main()
