# shellcheck shell=sh
# Debian package helpers shared by scripts/setup.sh and scripts/install-*-deps.sh (sourced,
# POSIX sh). The caller defines log() (one line to stderr) and runs as root.
#
#   apt_ensure PKG...   install those of PKG... that dpkg does not report installed, with
#                       apt-get update first (once per script run); does nothing, and never
#                       touches apt, when all are installed, so the scripts stay idempotent
#                       and quick on a provisioned machine
#   apt_update_once     apt-get update, at most once per script run
#
# Every apt-get call waits up to 10 minutes for the dpkg lock (DPkg::Lock::Timeout=600)
# instead of failing, as another install may be running at the same time.

export DEBIAN_FRONTEND=noninteractive

apt_updated=0

apt_update_once() {
    [ "$apt_updated" = 1 ] && return 0
    apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
    apt_updated=1
}

# Prints, space-separated, those of its arguments that are not installed. Asks dpkg rather
# than looking for binaries: different packages can provide the same file (busybox and
# busybox-static), and libraries have none.
apt_missing() {
    for pkg in "$@"; do
        case $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) in
            "install ok installed") ;;
            *) printf ' %s' "$pkg" ;;
        esac
    done
}

apt_ensure() {
    need=$(apt_missing "$@")
    [ -n "$need" ] || return 0
    log "installing:$need"
    apt_update_once
    # shellcheck disable=SC2086
    apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $need >/dev/null
}
