#!/usr/bin/env bash
# Run the dattui test suite: the one command README.md gives (CI runs exactly this).
#   ./scripts/test.sh [extra pytest args]
# - installs the Debian packages the network-namespace tests need, only if missing
# - creates/uses the virtualenv .venv with the test tools and dattui (editable: unit tests)
# - builds the wheel and installs it into a clean virtualenv .venv-wheel (no checkout on
#   sys.path): every test that starts a dattui process runs that installed `dattui`
# - runs: python -m pytest -q -ra tests [extra args]
# Network-namespace tests need root; as non-root they are skipped (with a reason).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
export PATH="$PATH:/usr/sbin:/sbin"  # ip, iptables, conntrack live there (sudo/non-login shells)

# --- system packages (Debian/Ubuntu) -----------------------------------------
missing=()
command -v ip >/dev/null 2>&1        || missing+=(iproute2)
command -v iptables >/dev/null 2>&1  || missing+=(iptables)
command -v tmux >/dev/null 2>&1      || missing+=(tmux)
command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
command -v stun >/dev/null 2>&1      || missing+=(stun-client)
[ -x /usr/bin/tinyproxy ] || [ -x /usr/sbin/tinyproxy ] || missing+=(tinyproxy)   # tests/test_proxy.py
# Debian's python3 ships without ensurepip/venv unless python3-venv is installed
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 && [ ! -x .venv/bin/python ]; then
    missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: missing ${missing[*]} and no apt-get; install them by hand" >&2
    else
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then
            if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
                echo "test.sh: missing ${missing[*]}; not root and no sudo, so not installing" >&2
                SUDO="skip"
            fi
        fi
        if [ "$SUDO" != "skip" ]; then
            echo "test.sh: installing ${missing[*]}" >&2
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
        fi
    fi
fi

# --- virtualenv ----------------------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "test.sh: dattui needs Python >= 3.11 ($PYTHON is $("$PYTHON" -V 2>&1)); set PYTHON=..." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
VPY=.venv/bin/python
# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.dattui-install-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VPY" -m pip install -q --disable-pip-version-check -e '.[test]'
    echo "$want" > "$stamp"
fi

# --- the wheel, installed as a user installs it -------------------------------------
rm -rf .build/wheel .venv-wheel
mkdir -p .build
quiet() {  # run a command, show its output only when it fails
    if ! "$@" >.build/step.log 2>&1; then cat .build/step.log >&2; echo "test.sh: failed: $*" >&2; exit 1; fi
}
quiet "$VPY" -m pip wheel --disable-pip-version-check --no-deps -w .build/wheel .
wheel=$(ls .build/wheel/dattui-*.whl)
quiet "$PYTHON" -m venv .venv-wheel
quiet .venv-wheel/bin/python -m pip install --disable-pip-version-check "$wheel"
.venv-wheel/bin/dattui --help >/dev/null || { echo "test.sh: the installed wheel's dattui does not run" >&2; exit 1; }
export DATTUI_VENV="$PWD/.venv-wheel" DATTUI_WHEEL="$PWD/$wheel"

# --- tests -------------------------------------------------------------------------
# Exit codes pass through unchanged; 5 ("no tests collected") is a failure too.
rc=0
"$VPY" -m pytest -q -ra tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests (exit 5) - treating as failure" >&2
fi
exit "$rc"
