#!/usr/bin/env bash
# Install what bench/compare.py needs; idempotent, does nothing that is already done.
#   bench/setup.sh            (bench/compare.py runs it itself unless --no-setup)
# - Debian packages iperf3, iproute2, iptables, ethtool (apt-get, only the missing ones; needs root)
# - npm packages for the Hyperdrive peer into bench/hyper/node_modules (npm install,
#   only when node_modules is missing or older than package.json)
# - magic-wormhole, its mailbox server and transit relay in their own venv
#   bench/.venv-wormhole (so their dependencies never touch .venv)
# Exit status: 0 ready, 2 cannot set up (not root, no node/npm, no python3 venv, ...),
# with one line on stderr saying why.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
export PATH="$PATH:/usr/sbin:/sbin"
PYTHON="${PYTHON:-python3}"
die() { echo "bench/setup.sh: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "needs root (apt-get, network namespaces)"

# --- Debian packages -----------------------------------------------------------
missing=()
command -v iperf3 >/dev/null 2>&1   || missing+=(iperf3)
command -v ip >/dev/null 2>&1       || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v tc >/dev/null 2>&1       || missing+=(iproute2)
command -v ss >/dev/null 2>&1       || missing+=(iproute2)
command -v ethtool >/dev/null 2>&1  || missing+=(ethtool)   # offloads off for --loss
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 && [ ! -x .venv-wormhole/bin/python ]; then
    missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get"
    echo "bench/setup.sh: apt-get install ${missing[*]}" >&2
    # iperf3's package asks whether to start a daemon: noninteractive takes the default (no)
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
fi

# --- Hyperdrive (npm) ----------------------------------------------------------
command -v node >/dev/null 2>&1 || die "no node (install nodejs >= 18: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1  || die "no npm (apt-get install npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "node $(node --version) is too old: Hyperdrive needs node >= 18"
if [ ! -d hyper/node_modules ] || [ hyper/package.json -nt hyper/node_modules/.setup-stamp ]; then
    echo "bench/setup.sh: npm install in bench/hyper" >&2
    (cd hyper && npm install --no-audit --no-fund --loglevel=error >&2) || die "npm install in bench/hyper failed"
    touch hyper/node_modules/.setup-stamp
fi

# --- magic-wormhole (own venv) -------------------------------------------------
WH=.venv-wormhole
if [ ! -x "$WH/bin/wormhole" ] || [ ! -x "$WH/bin/twist" ] \
   || ! "$WH/bin/python" -c 'import wormhole_mailbox_server, wormhole_transit_relay' >/dev/null 2>&1; then
    echo "bench/setup.sh: creating $WH (magic-wormhole, mailbox server, transit relay)" >&2
    [ -x "$WH/bin/python" ] || "$PYTHON" -m venv "$WH" || die "python3 -m venv $WH failed"
    "$WH/bin/pip" install -q --disable-pip-version-check \
        magic-wormhole magic-wormhole-mailbox-server magic-wormhole-transit-relay >&2 \
        || die "pip install magic-wormhole magic-wormhole-mailbox-server magic-wormhole-transit-relay failed"
fi
exit 0
