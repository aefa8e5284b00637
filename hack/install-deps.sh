#!/usr/bin/env bash
# Installs the system packages corral needs to build, run and test, and only
# the ones that are missing, so it is cheap to call before every build.
# Idempotent: running it twice changes nothing the second time.
set -euo pipefail

packages=(
	runc                        # the default OCI runtime
	crun                        # the second OCI runtime (skipped where it cannot run)
	containernetworking-plugins # CNI plugins: bridge, loopback, portmap, ...
	busybox-static              # rootfs for test containers
	iproute2                    # ip netns for network tests
	iptables                    # portmap and bridge plugins
	containerd                  # the interoperability peer and benchmark baseline
	docker-registry             # a real OCI registry on loopback for image tests
	apache2-utils               # htpasswd, for the registry auth test
	protobuf-compiler           # make protos
	gcc                         # bin/corral-pause, the pods' infra process
	libc6-dev                   # the static libc that corral-pause links
	ca-certificates
	util-linux                  # critest runs ipcmk; its images get ipcs (hack/critest.sh)
	systemd                     # systemd-analyze verify of corrald.service (works where systemd is not PID 1)
	skopeo                      # writes and reads the docker-archive and oci-archive files of the image import/export tests
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
	exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's postinst scripts try to start containerd and docker-registry as
# services; the tests start their own instances, so keep the packaged ones off.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
