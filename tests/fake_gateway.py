"""A home router's port-mapping service for the NAT lab: NAT-PMP (RFC 6886)
and PCP (RFC 6887) on UDP port 5351, just enough of both for the doctor.

    python tests/fake_gateway.py BIND_IP EXTERNAL_IP [--protocols natpmp,pcp]

Run inside a NAT router's namespace, bound to its LAN address (the peers'
default gateway). It answers the NAT-PMP public address request and "map
UDP" requests, and PCP ANNOUNCE and MAP requests for UDP, granting every
mapping as asked (same external port, the lifetime asked for, capped at an
hour; lifetime 0 deletes). It prints "ready", then one JSON line per request
it answered, so a test sees what was asked. A protocol left out of
--protocols gets no answer at all. Nothing is forwarded for real.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
import time

PORT = 5351


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bind")
    ap.add_argument("external")
    ap.add_argument("--protocols", default="natpmp,pcp")
    a = ap.parse_args()
    protocols = set(a.protocols.split(","))
    epoch0 = time.monotonic()
    ext = socket.inet_aton(a.external)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.bind, PORT))
    print("ready", flush=True)
    while True:
        data, src = s.recvfrom(2048)
        epoch = int(time.monotonic() - epoch0)
        log = None
        if len(data) >= 2 and data[0] == 0 and "natpmp" in protocols:
            if data[1] == 0 and len(data) == 2:
                s.sendto(struct.pack("!BBHI", 0, 128, 0, epoch) + ext, src)
                log = {"protocol": "natpmp", "op": "public"}
            elif data[1] == 1 and len(data) == 12:
                _, _, _, internal, suggested, lifetime = struct.unpack("!BBHHHI", data)
                granted = min(lifetime, 3600)
                external = internal if granted else 0
                s.sendto(struct.pack("!BBHIHHI", 0, 129, 0, epoch, internal, external, granted), src)
                log = {"protocol": "natpmp", "op": "map", "internal_port": internal,
                       "suggested": suggested, "lifetime": lifetime}
        elif len(data) >= 24 and data[0] == 2 and "pcp" in protocols:
            opcode, lifetime = data[1] & 0x7F, int.from_bytes(data[4:8], "big")
            if opcode == 0:  # ANNOUNCE
                s.sendto(bytes([2, 0x80, 0, 0]) + struct.pack("!II", 0, epoch) + bytes(12), src)
                log = {"protocol": "pcp", "op": "announce"}
            elif opcode == 1 and len(data) >= 60 and data[36] == 17:  # MAP, UDP
                nonce, internal = data[24:36], int.from_bytes(data[40:42], "big")
                granted = min(lifetime, 3600)
                mapped = ipaddress.IPv6Address("::ffff:" + a.external).packed
                body = nonce + struct.pack("!B3xHH", 17, internal, internal if granted else 0) + mapped
                s.sendto(bytes([2, 0x81, 0, 0]) + struct.pack("!II", granted, epoch) + bytes(12) + body, src)
                log = {"protocol": "pcp", "op": "map", "internal_port": internal, "lifetime": lifetime}
        if log is not None:
            print(json.dumps(log), flush=True)


if __name__ == "__main__":
    sys.exit(main())
