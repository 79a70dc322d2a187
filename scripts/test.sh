#!/usr/bin/env bash
# Runs every lienthong test on a fresh Debian 12 machine, installing what the tests need:
#   - Debian packages: chromium (browser end-to-end tests), swaks (SMTP client), nsd and
#     bind9-dnsutils/knot-dnsutils (DNS interop and dig), postfix (smtp-sink for mail tests)
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
  [smtp-sink]=postfix [ip]=iproute2 [perl-ssl]=libio-socket-ssl-perl [openssl]=openssl [node]=nodejs [npm]=npm
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
  LIENTHONG_BINARY="$PWD/target/debug/lienthong" node --test tests/browser/
fi
echo "== all tests passed"
