# Sourced by scripts/demo, scripts/test and scripts/bench: make .venv and install edgeloop
# with the given extras, reinstalling only when pyproject.toml or the extras change.
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
    local want
    want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "edgeloop: installing edgeloop[$extras] into $venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" >&2
        echo "$want" >"$stamp"
    fi
    export PATH="$venv/bin:$PATH"
}
