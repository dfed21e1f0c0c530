# shellcheck shell=bash
# Helpers shared by the scripts in this directory. Source it, do not run it:
#   # shellcheck source=scripts/common.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# It sets ROOT (the repository root) and defines the functions below.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "common.sh is a library; source it from another script" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# Oldest rustc that builds the crate (edition 2024).
RUST_MIN_VERSION="1.85.0"

# Print a section header. Bold on a terminal, plain in CI logs.
section() {
    if [[ -t 1 ]]; then
        printf '\n\033[1m==> %s\033[0m\n' "$*"
    else
        printf '\n==> %s\n' "$*"
    fi
}

info() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "$(basename "$0") must run as root (try: sudo $0)"
    fi
}

# Home directory of the user who called sudo, if any.
sudo_user_home() {
    if [[ -n "${SUDO_USER:-}" && "${SUDO_USER}" != "root" ]]; then
        getent passwd "$SUDO_USER" | cut -d: -f6
    fi
}

# Make `cargo` reachable: rustup puts it in ~/.cargo/bin, which is not on PATH
# in non-login shells, and `sudo` resets both PATH (secure_path) and often HOME.
# Looks in $CARGO_HOME, $HOME and the sudo caller's home, in that order. When
# the toolchain belongs to the sudo caller, RUSTUP_HOME points at theirs so the
# rustup proxies find the installed toolchain (nothing is written there).
setup_cargo_path() {
    local dir home
    local -a homes=()
    [[ -n "${HOME:-}" ]] && homes+=("$HOME")
    home="$(sudo_user_home || true)"
    [[ -n "$home" ]] && homes+=("$home")

    local -a dirs=()
    [[ -n "${CARGO_HOME:-}" ]] && dirs+=("$CARGO_HOME/bin")
    for home in "${homes[@]}"; do dirs+=("$home/.cargo/bin"); done

    for dir in "${dirs[@]}"; do
        [[ -x "$dir/cargo" ]] || continue
        case ":$PATH:" in
            *":$dir:"*) ;;
            *) PATH="$dir:$PATH" ;;
        esac
        home="$(dirname "$(dirname "$dir")")"
        if [[ -z "${RUSTUP_HOME:-}" && ! -d "${HOME:-/nonexistent}/.rustup" && -d "$home/.rustup" ]]; then
            export RUSTUP_HOME="$home/.rustup"
        fi
        break
    done
    export PATH
}

# True if a usable cargo/rustc (new enough for the crate) is on PATH.
have_rust() {
    command -v cargo >/dev/null 2>&1 || return 1
    command -v rustc >/dev/null 2>&1 || return 1
    local v
    v="$(rustc --version 2>/dev/null | awk '{print $2}')" || return 1
    v="${v%%-*}"
    [[ -n "$v" ]] || return 1
    [[ "$(printf '%s\n%s\n' "$RUST_MIN_VERSION" "$v" | sort -V | head -n1)" == "$RUST_MIN_VERSION" ]]
}

# Give build output back to the user who ran `sudo ./scripts/...`, so a later
# `cargo build` without sudo does not trip over root-owned files in target/.
restore_target_owner() {
    if [[ -n "${SUDO_UID:-}" && "${SUDO_UID}" != "0" && -d "$ROOT/target" ]]; then
        if [[ "$(stat -c %u "$ROOT")" == "$SUDO_UID" ]]; then
            chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$ROOT/target" 2>/dev/null || true
        fi
    fi
}
