#!/bin/sh
# Install noVNC for novalite's console page (the console proxy serves its core/ and vendor/).
#
#   scripts/setup-novnc.sh            # into /usr/local/share/novalite/novnc (root)
#                                     # or ~/.local/share/novalite/novnc (anyone else)
#   scripts/setup-novnc.sh DIR        # into DIR; then set novnc_path = "DIR" (NOVALITE_NOVNC_PATH)
#
# Source, in order: the npm registry's @novnc/novnc (the library only: core/, vendor/),
# fetched with `npm pack` (no node_modules, no scripts run); without npm, as root, Debian's
# `novnc` package (/usr/share/novnc; then set novnc_path, the packaged copy comes first).
# Idempotent: exits at once when DIR already holds this version. NOVNC_VERSION overrides it.
set -eu

VERSION=${NOVNC_VERSION:-1.7.0}
if [ $# -ge 1 ]; then
    DEST=$1
elif [ "$(id -u)" = 0 ]; then
    DEST=/usr/local/share/novalite/novnc
else
    DEST=${XDG_DATA_HOME:-$HOME/.local/share}/novalite/novnc
fi

log() { echo "setup-novnc: $*" >&2; }

if [ -f "$DEST/core/rfb.js" ] && [ "$(cat "$DEST/.novalite-version" 2>/dev/null)" = "$VERSION" ]; then
    log "noVNC $VERSION already in $DEST"
    exit 0
fi

if command -v npm >/dev/null 2>&1; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/novalite-novnc.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT INT TERM
    log "fetching @novnc/novnc@$VERSION with npm"
    (cd "$WORK" && npm pack --silent "@novnc/novnc@$VERSION" >/dev/null)
    mkdir -p "$WORK/x"
    tar -xzf "$WORK"/novnc-novnc-*.tgz -C "$WORK/x"
    [ -f "$WORK/x/package/core/rfb.js" ] || { log "the npm package has no core/rfb.js"; exit 1; }
    mkdir -p "$(dirname "$DEST")"
    rm -rf "$DEST.new"
    mv "$WORK/x/package" "$DEST.new"
    echo "$VERSION" >"$DEST.new/.novalite-version"
    chmod -R a+rX "$DEST.new"
    rm -rf "$DEST"
    mv "$DEST.new" "$DEST"
    log "noVNC $VERSION installed in $DEST"
    exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if [ ! -f /usr/share/novnc/core/rfb.js ]; then
        log "npm not found: installing Debian's novnc package"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends novnc >/dev/null
    fi
    log "Debian's noVNC is in /usr/share/novnc: set novnc_path = \"/usr/share/novnc\" (the packaged copy comes first)"
    exit 0
fi

log "neither npm nor (as root) apt-get is available: install noVNC and set novnc_path"
exit 1
