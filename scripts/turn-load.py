#!/usr/bin/env python3
"""Load for the TURN comparison in BENCHMARKS.md: N sites, each one TURN-over-TLS allocation,
sending ChannelData at a video-like rate to one peer through the relay. Measures the server
process's CPU seconds (utime + stime from /proc) per relayed packet.

    turn-load.py lienthong --url https://127.0.0.1:8443 --pid PID [--sites 12 --pps 300 --seconds 20]
    turn-load.py coturn --server 127.0.0.1:5349 --secret S --realm R --peer 127.0.0.1:40000 --pid PID

For lienthong the credentials come from a real join (the welcome's iceServers) and the peer is
the SFU's media port, the only peer it relays to; for coturn they are computed from its
static-auth-secret and the peer is a UDP sink started here. Python standard library only.
"""
import argparse, base64, hashlib, hmac, json, os, socket, ssl, struct, sys, threading, time

COOKIE = 0x2112A442


def stun(method_class, transaction, attributes, key=None):
    body = b''
    for kind, value in attributes:
        body += struct.pack('!HH', kind, len(value)) + value + b'\0' * (-len(value) % 4)
    if key is not None:
        header = struct.pack('!HHI', method_class, len(body) + 24, COOKIE) + transaction
        digest = hmac.new(key, header + body, hashlib.sha1).digest()
        body += struct.pack('!HH', 0x0008, 20) + digest
    return struct.pack('!HHI', method_class, len(body), COOKIE) + transaction + body


def xor_address(host, port):
    raw = socket.inet_aton(host)
    xored = bytes(a ^ b for a, b in zip(raw, struct.pack('!I', COOKIE)))
    return struct.pack('!BBH', 0, 1, port ^ (COOKIE >> 16)) + xored


def read_stun(stream):
    header = recv_exact(stream, 20)
    length = struct.unpack('!H', header[2:4])[0]
    message = header + recv_exact(stream, length)
    attributes, offset = {}, 20
    while offset < len(message):
        kind, size = struct.unpack('!HH', message[offset:offset + 4])
        attributes.setdefault(kind, message[offset + 4:offset + 4 + size])
        offset += 4 + size + (-size % 4)
    return struct.unpack('!H', header[:2])[0], attributes


def recv_exact(stream, count):
    data = b''
    while len(data) < count:
        chunk = stream.recv(count - len(data))
        if not chunk:
            raise ConnectionError('closed')
        data += chunk
    return data


def tls_connect(host, port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stream = context.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return stream


class Site:
    def __init__(self, server, username, password, peer):
        self.stream = tls_connect(*server)
        self.username, self.password, self.peer = username.encode(), password, peer
        self.sequence = 0

    def request(self, method, attributes):
        for _ in range(2):
            self.sequence += 1
            transaction = os.urandom(8) + struct.pack('!I', self.sequence)
            signed = list(attributes)
            key = None
            if hasattr(self, 'nonce'):
                signed += [(0x0006, self.username), (0x0014, self.realm), (0x0015, self.nonce)]
                key = hashlib.md5(self.username + b':' + self.realm + b':' + self.password.encode()).digest()
            self.stream.sendall(stun(method, transaction, signed, key))
            kind, response = read_stun(self.stream)
            if kind & 0x0110 == 0x0110 and not hasattr(self, 'nonce'):
                self.realm, self.nonce = response[0x0014], response[0x0015]
                continue
            if kind & 0x0110 == 0x0110:
                raise RuntimeError(f'TURN error {response.get(0x0009)!r}')
            return response
        raise RuntimeError('no answer')

    def start(self):
        self.request(0x0003, [(0x0019, bytes([17, 0, 0, 0]))])  # Allocate, UDP
        address = xor_address(*self.peer)
        self.request(0x0008, [(0x0012, address)])  # CreatePermission
        self.request(0x0009, [(0x000C, struct.pack('!HH', 0x4000, 0)), (0x0012, address)])  # ChannelBind

    def run(self, pps, seconds, payload, counter):
        frame = struct.pack('!HH', 0x4000, len(payload)) + payload + b'\0' * (-len(payload) % 4)
        interval, sent = 1.0 / pps, 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            # A burst of 5 (a video frame's packets) every 5 intervals.
            self.stream.sendall(frame * 5)
            sent += 5
            delay = start + sent * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        counter.append(sent)


def cpu_seconds(pid):
    fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def lienthong_credentials(url, room, site, pin):
    host, port = url.split('://')[1].split(':')
    stream = tls_connect(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    stream.sendall((f'GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                    f'Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {url}\r\n\r\n').encode())
    response = b''
    while b'\r\n\r\n' not in response:
        response += stream.recv(1)
    assert b' 101 ' in response.split(b'\r\n')[0], response
    text = json.dumps({'type': 'join', 'v': 1, 'room': room, 'name': site, 'site': site, 'pin': pin}).encode()
    mask = os.urandom(4)
    stream.sendall(bytes([0x81, 0x80 | 126]) + struct.pack('!H', len(text)) + mask
                   + bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
    while True:
        first, second = recv_exact(stream, 2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack('!H', recv_exact(stream, 2))[0]
        elif length == 127:
            length = struct.unpack('!Q', recv_exact(stream, 8))[0]
        message = recv_exact(stream, length)
        if first & 0x0F == 1:
            welcome = json.loads(message)
            if welcome.get('type') == 'welcome':
                server = welcome['iceServers'][0]
                return server['username'], server['credential'], stream


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('target', choices=['lienthong', 'coturn'])
    parser.add_argument('--pid', type=int, required=True)
    parser.add_argument('--url'), parser.add_argument('--media')
    parser.add_argument('--server'), parser.add_argument('--secret'), parser.add_argument('--realm')
    parser.add_argument('--peer')
    parser.add_argument('--metrics', help="lienthong's admin /metrics URL, to count what reached the SFU")
    parser.add_argument('--sites', type=int, default=12)
    parser.add_argument('--pps', type=int, default=300)
    parser.add_argument('--seconds', type=float, default=20)
    parser.add_argument('--size', type=int, default=1000)
    arguments = parser.parse_args()
    keep = []
    sites = []
    sink = None
    if arguments.target == 'lienthong':
        host, port = arguments.url.split('://')[1].split(':')
        media_host, media_port = arguments.media.split(':')
        for index in range(arguments.sites):
            username, password, signaling = lienthong_credentials(arguments.url, 'giao-ban', f'Huyện {index}', '246810')
            keep.append(signaling)
            sites.append(Site((host, int(port)), username, password, (media_host, int(media_port))))
    else:
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer_host, peer_port = arguments.peer.split(':')
        sink.bind((peer_host, int(peer_port)))
        received = [0]

        def drain():
            while True:
                sink.recv(4096)
                received[0] += 1
        threading.Thread(target=drain, daemon=True).start()
        host, port = arguments.server.split(':')
        for index in range(arguments.sites):
            username = f'{int(time.time()) + 3600}:site{index}'
            password = base64.b64encode(hmac.new(arguments.secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
            sites.append(Site((host, int(port)), username, password, (peer_host, int(peer_port))))
    for site in sites:
        site.start()
    counter = []
    payload = os.urandom(arguments.size)
    threads = [threading.Thread(target=site.run, args=(arguments.pps, arguments.seconds, payload, counter)) for site in sites]
    before, started = cpu_seconds(arguments.pid), time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.5)
    cpu, elapsed = cpu_seconds(arguments.pid) - before, time.monotonic() - started
    sent = sum(counter)
    line = (f'{arguments.target}: {arguments.sites} sites, {sent} packets of {arguments.size} B in {elapsed:.1f} s '
            f'({sent / elapsed:.0f}/s); server CPU {cpu:.2f} s = {1e6 * cpu / sent:.1f} µs per relayed packet; '
            f'load average {os.getloadavg()[0]:.1f}')
    if sink is not None:
        line += f'; peer received {received[0]}'
    if arguments.metrics:
        import urllib.request
        text = urllib.request.urlopen(arguments.metrics).read().decode()
        relayed = [line for line in text.splitlines() if line.startswith('lienthong_conference_turn_relayed_packets_total')]
        line += f'; relayed to the SFU (metric): {relayed[0].split()[-1] if relayed else "?"}'
    print(line)


if __name__ == '__main__':
    main()
