# Installing Debian packages for the test and benchmark scripts (sourced).
# Server packages (prosody, ejabberd) would start system-wide daemons on
# every interface; the scripts run their own. Service starts are denied
# during the install, as container images do, unless a policy is there.

apt_install() {
    printf '\n== installing Debian packages: %s\n' "$*"
    export DEBIAN_FRONTEND=noninteractive
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # Another apt (a machine's boot-time upgrades, another script) may
    # hold dpkg's lock for a while: wait for it rather than fail.
    local wait_for_lock=(-o DPkg::Lock::Timeout=600)
    apt-get "${wait_for_lock[@]}" update -q
    apt-get "${wait_for_lock[@]}" install -y -q --no-install-recommends "$@"
}

# Installs those of the named packages that are missing.
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
}
