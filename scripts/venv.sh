# Sourced by scripts/demo, scripts/test and scripts/bench: make .venv and install edgeloop
# with the given extras (comma-separated), reinstalling only when pyproject.toml, setup.py or
# collector/redact.py/.pxd (compiled at install) change or an extra is missing.
ensure_venv() {
    local extras="$1"
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local venv="$root/.venv"
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null; then
        echo "edgeloop: needs Python 3.11 or newer as '$python' (set PYTHON=...)" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "edgeloop: needs Python 3.11 or newer, '$python' is $("$python" -V 2>&1)" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "edgeloop: creating $venv" >&2
        "$python" -m venv "$venv"
    fi
    local stamp="$venv/.edgeloop-installed"
    local hash have
    # collector/redact.py and .pxd too: the install compiles them (setup.py), and a build of an older text is not used.
    hash="$(cat "$root/pyproject.toml" "$root/setup.py" "$root/collector/redact.py" "$root/collector/redact.pxd" | sha256sum | cut -c1-16)"
    have=""
    if [ "$(head -1 "$stamp" 2>/dev/null)" = "$hash" ]; then
        have="$(sed -n 2p "$stamp")"
    fi
    local missing="" extra
    for extra in ${extras//,/ }; do
        case ",$have," in *",$extra,"*) ;; *) missing="$missing $extra" ;; esac
    done
    if [ ! -f "$stamp" ] || [ "$(head -1 "$stamp")" != "$hash" ] || [ -n "$missing" ]; then
        local want
        want="$(printf '%s\n' ${have//,/ } ${extras//,/ } | sort -u | paste -sd, -)"
        echo "edgeloop: installing edgeloop[$want] into $venv (a minute on a fresh machine)" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
        if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$want]" >"$venv/pip.log" 2>&1; then
            cat "$venv/pip.log" >&2
            echo "edgeloop: installing into $venv failed (log above)" >&2
            return 1
        fi
        printf '%s\n%s\n' "$hash" "$want" >"$stamp"
    fi
    export PATH="$venv/bin:$PATH"
}
