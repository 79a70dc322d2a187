#!/usr/bin/env python3
"""Independent DKIM check for lienthong's tests: verifies every DKIM-Signature of the message
on standard input with dkimpy, fetching keys over DNS from 127.0.0.1:PORT (lienthong's own
DNS). Prints one "pass|fail SELECTOR" line per signature; exits 0 only if all pass."""
import sys

import dkim
import dns.resolver


def main() -> int:
    port = int(sys.argv[1])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 10

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        answer = resolver.resolve(name, "TXT")
        return b"".join(b"".join(record.strings) for record in answer)

    message = sys.stdin.buffer.read()
    verifier = dkim.DKIM(message)
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    if count == 0:
        print("no DKIM-Signature")
        return 1
    ok = True
    for index in range(count):
        passed = verifier.verify(idx=index, dnsfunc=dnsfunc)
        selector = verifier.signature_fields.get(b"s", b"?").decode()
        print(f"{'pass' if passed else 'fail'} {selector}")
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
