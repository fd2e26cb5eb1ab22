#!/usr/bin/env bash
# The Debian packages the built-in corpora come from, installed with apt-get where they are missing.
# A fresh machine often runs unattended-upgrades at boot, which holds apt's locks for minutes: apt-get
# then waits for them, up to APT_LOCK_WAIT seconds (default 600), instead of failing at once.
set -euo pipefail

PACKAGES="dataset-fashion-mnist libsword-utils sword-text-kjv sword-text-sparv python3.11-doc"
APT_LOCK_WAIT=${APT_LOCK_WAIT:-600}

command -v apt-get >/dev/null 2>&1 || exit 0
missing=$(for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
[ -n "$missing" ] || exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"

# apt-get waits for the dpkg lock itself (DPkg::Lock::Timeout), not for the package lists' lock that
# `apt-get update` takes: a lock error is retried until the deadline.
apt_get() {
  local deadline=$((SECONDS + APT_LOCK_WAIT)) out
  while ! out=$(DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout="$APT_LOCK_WAIT" "$@" 2>&1); do
    if ! grep -Eq "Could not get lock|Unable to acquire|Unable to lock" <<<"$out"; then
      echo "$out" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$out" >&2
      echo "setup: apt is still locked after ${APT_LOCK_WAIT}s (another apt, dpkg or unattended-upgrades is running);" \
           "wait for it to finish (or set APT_LOCK_WAIT), then run scripts/setup.sh again" >&2
      return 1
    fi
    sleep 2
  done
}

echo "installing Debian data packages: $(echo $missing) (waiting up to ${APT_LOCK_WAIT}s if another apt holds the lock)"
apt_get update -qq || true  # offline, or a stale mirror: the install below may still find the packages
apt_get install -y -qq $missing >/dev/null
