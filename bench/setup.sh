#!/usr/bin/env bash
# Debian packages the benchmarks need beyond the project's virtualenv (run as root).
#
#   postfix                      the peer in bench/relay.py (--targets postfix): smtpd, smtp,
#                                smtp-source and smtp-sink (the last two are in postfix itself)
#   opendkim, opendkim-tools     its DKIM signer (a milter on a unix socket) and opendkim-genkey
#   sasl2-bin, libsasl2-modules  Cyrus SASL: saslpasswd2 and the sasldb auxprop plugin, so the
#                                benchmark's STARTTLS + AUTH PLAIN client logs in to Postfix as
#                                it does to the gateway
#   swaks                        one-off test messages when checking a setup by hand
#
# Services are kept from starting while the packages install (policy-rc.d): the benchmark
# runs its own Postfix and OpenDKIM instances with their own configuration directories,
# and never touches the system's. CI does not run the benchmarks, so .ci/run does not call
# this. py-spy (profiling, bench/README.md) comes from PyPI: .venv/bin/pip install py-spy
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "bench/setup.sh: run as root (apt-get)" >&2; exit 1; }
packages=(postfix opendkim opendkim-tools sasl2-bin libsasl2-modules swaks)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "bench/setup.sh: every package is installed"
    exit 0
fi
policy=/usr/sbin/policy-rc.d added=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added=1
fi
trap '[ "$added" = 1 ] && rm -f "$policy"' EXIT
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "bench/setup.sh: installed ${missing[*]}"
