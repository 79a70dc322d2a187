#!/usr/bin/env bash
# Runs every lienthong test on a fresh Debian 12 machine, installing what the tests need:
#   - Debian packages: chromium (browser end-to-end tests), nftables and coturn (the browser
#     test behind TCP-443-only firewalls, the TURN benchmark), swaks (SMTP client), nsd and
#     bind9-dnsutils/knot-dnsutils (DNS interop and dig), unbound, bind9-utils and ldnsutils
#     (DNSSEC: a validating resolver and two zone verifiers), postfix (smtp-sink for mail tests)
#   - PyPI: dkimpy (the independent DKIM verifier)
#   - npm packages for the browser tests (tests/browser, playwright-core driving the system
#     Chromium; no browser download)
# Then: cargo test for the whole workspace, and the browser tests against the real binary.
# Usage: scripts/test.sh            (as root, or with passwordless sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
# command the tests run -> Debian package that provides it
declare -A PROVIDES=(
  [chromium]=chromium [swaks]=swaks [nsd]=nsd [dig]=bind9-dnsutils [kdig]=knot-dnsutils
  [unbound]=unbound [dnssec-verify]=bind9-utils [ldns-verify-zone]=ldnsutils
  [smtp-sink]=postfix [ip]=iproute2 [nft]=nftables [turnserver]=coturn [perl-ssl]=libio-socket-ssl-perl [openssl]=openssl [node]=nodejs [npm]=npm
  [ffmpeg]=ffmpeg [tc]=iproute2 [iptables]=iptables
)
missing=()
for command in "${!PROVIDES[@]}"; do
  [[ $command == perl-ssl ]] && continue
  command -v "$command" >/dev/null 2>&1 || [[ -x /usr/sbin/$command ]] || missing+=("${PROVIDES[$command]}")
done
# swaks needs these Perl modules for STARTTLS and implicit TLS.
perl -MIO::Socket::SSL -MNet::SSLeay -e1 2>/dev/null || missing+=(libio-socket-ssl-perl libnet-ssleay-perl)
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  # Postfix: install with no configuration so nothing starts listening on port 25.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  POLICY=/usr/sbin/policy-rc.d OWN_POLICY=0
  if [[ ! -e $POLICY ]]; then printf '#!/bin/sh\nexit 101\n' | $SUDO tee $POLICY >/dev/null; $SUDO chmod 755 $POLICY; OWN_POLICY=1; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  if ((OWN_POLICY)); then $SUDO rm -f $POLICY; fi
fi
# dkimpy (with PyNaCl for Ed25519) is the independent DKIM verifier of tests/integration/dkim.rs.
if ! python3 -c 'import dkim, nacl, dns.resolver' 2>/dev/null; then
  echo "== installing dkimpy from PyPI"
  command -v pip3 >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || {
    $SUDO apt-get update -q; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-pip; }
  python3 -m pip install -q --break-system-packages 'dkimpy[ed25519]==1.1.8' 'dnspython>=2' 2>/dev/null \
    || python3 -m pip install -q 'dkimpy[ed25519]==1.1.8' 'dnspython>=2'
fi
# The packaged daemons must not hold the ports the tests use.
for service in nsd postfix unbound; do
  if [[ -d /run/systemd/system ]]; then $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
  else [[ -x /etc/init.d/$service ]] && $SUDO /etc/init.d/"$service" stop >/dev/null 2>&1 || true; fi
done

echo "== cargo test (workspace)"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast

if [[ -f tests/browser/package.json ]]; then
  echo "== browser end-to-end tests (Chromium $(chromium --version 2>/dev/null | awk '{print $2}'))"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  # One file at a time. Each file is real-time media between real browsers on this machine:
  # on a loaded 2-core CI runner a browser can be starved long enough for a timing bound to
  # pass (the SFU keeps the lowest layers flowing towards such a browser, see LinkHealth in
  # sfu/src/layers.rs, but a starved encoder still misses deadlines). So a file that fails
  # gets one more run, printed as RETRY; a second failure fails the suite.
  browser_status=0
  for file in tests/browser/*.test.mjs; do
    LIENTHONG_BINARY="$PWD/target/debug/lienthong" node --test "$file" && continue
    echo "== RETRY: $file failed once; running it once more"
    LIENTHONG_BINARY="$PWD/target/debug/lienthong" node --test "$file" || browser_status=1
  done
  ((browser_status == 0)) || { echo "== browser tests failed"; exit 1; }
fi
echo "== all tests passed"
