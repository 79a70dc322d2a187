#!/usr/bin/env python3
"""Holds every packet of an NFQUEUE queue for a fixed delay, then accepts it.

This kernel has no sch_netem, so the thin-link test delays its router's forwarded packets
through NFQUEUE (`iptables ... -j NFQUEUE --queue-num N`) with this program. It speaks
nfnetlink_queue directly over a netlink socket (Python's standard library only): it binds
the queue, asks for packet metadata only (no payload copy), and gives each packet its
NF_ACCEPT verdict `delay` milliseconds after the kernel queued it. Verdicts may be given in
any order, so packets are neither reordered nor dropped by the delay itself.

Usage: delay-queue.py QUEUE_NUM DELAY_MS   (runs until SIGTERM; prints "ready" once bound)
"""

import heapq
import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
AF_INET = 2


def attribute(kind, payload):
    length = 4 + len(payload)
    return struct.pack('=HH', length, kind) + payload + b'\0' * ((4 - length % 4) % 4)


def message(kind, queue, attributes, seq, flags=NLM_F_REQUEST):
    body = struct.pack('!BBH', AF_INET, 0, queue) + b''.join(attributes)
    header = struct.pack('=IHHII', 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0)
    return header + body


def acknowledged(sock, seq):
    """Waits for the kernel's answer to a config request and fails loudly on an error."""
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _, answer_seq, _ = struct.unpack_from('=IHHII', data, offset)
            if kind == NLMSG_ERROR and answer_seq == seq:
                (error,) = struct.unpack_from('=i', data, offset + 16)
                if error != 0:
                    sys.exit(f'delay-queue: the kernel refused the config: {os.strerror(-error)}')
                return
            offset += max(16, (length + 3) & ~3)


def main():
    queue, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000.0
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    seq = 1
    sock.send(message(NFQNL_MSG_CONFIG, queue, [attribute(NFQA_CFG_CMD, struct.pack('!BxH', NFQNL_CFG_CMD_BIND, AF_INET))], seq, NLM_F_REQUEST | NLM_F_ACK))
    acknowledged(sock, seq)
    seq += 1
    sock.send(message(NFQNL_MSG_CONFIG, queue, [attribute(NFQA_CFG_PARAMS, struct.pack('!IB', 0, NFQNL_COPY_META))], seq, NLM_F_REQUEST | NLM_F_ACK))
    acknowledged(sock, seq)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print('ready', flush=True)

    due = []  # (release time, packet id)
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            data = sock.recv(65536)
            now = time.monotonic()
            offset = 0
            while offset + 20 <= len(data):
                length, kind, _, _, _ = struct.unpack_from('=IHHII', data, offset)
                if length < 20 or offset + length > len(data):
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    position = offset + 20
                    while position + 4 <= offset + length:
                        attr_length, attr_kind = struct.unpack_from('=HH', data, position)
                        if attr_length < 4:
                            break
                        if attr_kind & 0x3FFF == NFQA_PACKET_HDR:
                            (packet_id,) = struct.unpack_from('!I', data, position + 4)
                            heapq.heappush(due, (now + delay, packet_id))
                        position += (attr_length + 3) & ~3
                offset += (length + 3) & ~3
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, packet_id = heapq.heappop(due)
            seq += 1
            sock.send(message(NFQNL_MSG_VERDICT, queue, [attribute(NFQA_VERDICT_HDR, struct.pack('!II', NF_ACCEPT, packet_id))], seq))


if __name__ == '__main__':
    main()
