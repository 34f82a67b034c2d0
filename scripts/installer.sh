# Sourced by scripts/install-collector and scripts/install-ingest: what both installers do the
# same way. The caller sets: name (log prefix), user, prefix, python, checkout, dry_run,
# venv_dir, extras, commands (the console scripts to put on PATH), unit_name, unit_source.

# Every change goes through `run`, so --dry-run shows exactly what a real run would do.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}
say() { echo "$name: $*" >&2; }
die() { echo "$name: $*" >&2; exit 1; }
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }

# Temporary files are made beside their target and removed on any exit, so none is left behind.
temps=()
cleanup_temps() { [ ${#temps[@]} -eq 0 ] || rm -f -- "${temps[@]}"; }
trap cleanup_temps EXIT
temp_beside() {  # temp_beside TARGET: prints a new temp file's path in TARGET's folder
    local tmp
    tmp="$(mktemp "$(dirname "$1")/.$(basename "$1").XXXXXX")"
    temps+=("$tmp")
    echo "$tmp"
}

# An absolute --prefix without a trailing slash ("" for /); root is "/" or the prefix.
resolve_prefix() {
    if [ "$prefix" != / ] && [ "$dry_run" = 0 ]; then
        mkdir -p "$prefix" || die "cannot create --prefix $prefix"
        prefix="$(cd "$prefix" && pwd)"
    fi
    prefix="${prefix%/}"
    root="${prefix:-/}"
}

# A path inside the installed system, as the system will see it (prefix stripped).
in_root() { echo "${1#"$prefix"}"; }

account_exists() { id -u "$user" >/dev/null 2>&1; }

# The service account: a system user with no login and no home of its own. Into a --prefix
# (an image being built) nothing is added: useradd cannot lock that root's /etc/passwd, and
# the account belongs to the image's own first boot (systemd-sysusers or the image recipe).
ensure_account() {  # ensure_account HOME COMMENT
    if account_exists; then
        say "user $user exists"
    elif [ "$root" != / ]; then
        say "user $user does not exist here; create it in the image (installing into $prefix)"
    else
        run useradd --system --user-group --home-dir "$1" --no-create-home \
            --shell /usr/sbin/nologin --comment "$2" "$user"
    fi
    group="$user"
    if account_exists; then
        group="$(id -gn "$user")"
    fi
}

# chown that is skipped (with a note, once) when the account does not exist in this root.
own() {  # own OWNER:GROUP FILE
    if account_exists || [ "$dry_run" = 1 ]; then
        run chown "$1" "$2"
    fi
}

# The virtualenv with edgeloop from this checkout (a copy, not editable: the checkout may go).
# --force-reinstall of edgeloop itself: an upgrade from a checkout with the same version
# number must still replace the code.
install_venv() {
    if [ ! -x "$venv_dir/bin/python" ]; then
        run "$python" -m venv "$venv_dir"
    fi
    run "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    run "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$checkout$extras"
    run "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$checkout"
}

# The commands on PATH: symlinks in /usr/local/bin into the venv.
link_commands() {
    local bin="$prefix/usr/local/bin" command
    run install -d -m 0755 "$bin"
    for command in "${commands[@]}"; do
        run ln -sfn "$(in_root "$venv_dir")/bin/$command" "$bin/$command"
    done
}

# The unit, with the service account named here; replaced on every run (upgrades bring new units).
install_unit() {
    local unit_dir="$prefix/etc/systemd/system"
    local unit="$unit_dir/$unit_name"
    run install -d -m 0755 "$unit_dir"
    if [ "$dry_run" = 1 ]; then
        run install -m 0644 "$unit_source" "$unit"
    else
        local tmp
        tmp="$(temp_beside "$unit")"
        sed -e "s/^User=.*$/User=$user/" -e "s/^Group=.*$/Group=$group/" "$unit_source" >"$tmp"
        chmod 0644 "$tmp"
        mv "$tmp" "$unit"
    fi
}

# A config file from the shipped example, if there is none; an existing one is never replaced.
install_config() {  # install_config EXAMPLE TARGET [sed args...]
    local example="$1" target="$2"
    shift 2
    if [ -e "$target" ]; then
        say "keeping $target"
        return
    fi
    if [ "$dry_run" = 1 ]; then
        run install -m 0640 -o root -g "$group" "$example" "$target"
        return
    fi
    local tmp
    tmp="$(temp_beside "$target")"
    sed -e '' "$@" "$example" >"$tmp"
    chmod 0640 "$tmp"
    if account_exists; then
        chown "root:$group" "$tmp" 2>/dev/null || chgrp "$group" "$tmp"
    fi
    mv "$tmp" "$target"
}

start_service() {  # start_service START(0|1)
    if [ "$root" != / ]; then
        say "installed into $prefix; systemctl not run"
    elif [ "$1" = 1 ]; then
        run systemctl daemon-reload
        run systemctl enable "$unit_name"
        run systemctl restart "$unit_name"  # starts it, or picks up an upgraded venv or unit
    else
        run systemctl daemon-reload
        say "installed; start it with: systemctl enable --now ${unit_name%.service}"
    fi
}

# Stop and remove the service, its venv and its commands; keep data and config unless purging.
uninstall() {  # uninstall PURGE(0|1) KEEP_DESCRIPTION PATHS_TO_PURGE...
    local purge="$1" kept="$2" command
    shift 2
    if [ "$root" = / ] && command -v systemctl >/dev/null; then
        run systemctl disable --now "$unit_name" || true
    fi
    run rm -f "$prefix/etc/systemd/system/$unit_name"
    if [ "$root" = / ] && command -v systemctl >/dev/null; then
        run systemctl daemon-reload
    fi
    for command in "${commands[@]}"; do
        if [ -L "$prefix/usr/local/bin/$command" ] || [ "$dry_run" = 1 ]; then
            run rm -f "$prefix/usr/local/bin/$command"
        fi
    done
    run rm -rf "$venv_dir"
    [ "$dry_run" = 1 ] || rmdir "$(dirname "$venv_dir")" 2>/dev/null || true
    if [ "$purge" = 1 ]; then
        run rm -rf "$@"
        if [ "$root" = / ] && account_exists; then
            run userdel "$user" || true
        fi
        say "uninstalled and purged"
    else
        say "uninstalled; kept $kept (--purge removes them)"
    fi
}
