#!/usr/bin/env bash
# Measures corrald next to Debian's containerd 1.6 with its CRI plugin, in
# the same run, on the same images, and prints both columns and their ratio
# (hack/cribench says what the workload is).
#
# What it does, all of it on loopback or in namespaces the runtimes create:
#   1. builds corrald, crictl and critest (make build bin/crictl bin/critest)
#   2. starts Debian's docker-registry on 127.0.0.1 with critest's images
#      (the busybox the pods run, containerd's sandbox image), mirrored as
#      registry.k8s.io and the others, as hack/critest.sh does
#   3. starts corrald and containerd side by side, each on its own root,
#      state and socket under a temp dir and with a bridge CNI network of its
#      own (crbench0, 10.88.241.0/24; crbench1, 10.88.242.0/24)
#   4. runs hack/cribench: the table goes to stdout, the JSON to
#      bin/bench/TIMESTAMP.json for comparison across commits
#   5. removes the pods, stops what it started (by pid), unmounts what was
#      mounted under its temp dir, deletes both bridges; a run killed before
#      it could (SIGKILL) is cleaned up by the next one (reap_stale)
#
# The machine is shared: run it under flock /tmp/corral-heavy.lock, and
# read the load averages the table prints before trusting its figures.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: hack/bench.sh [options] [-- cribench flags]

  --pods N      pods started one after another (default 20)
  --keep        keep the temp dir (runtime roots, logs, critest's output)
  -h, --help    this help

cribench flags (hack/cribench): -parallel-pods, -clients, -version-runs,
-critest-n, -critest "" (skips critest -benchmark).

Needs root. Takes a few minutes.
EOF
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pods=20
keep=0
extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--pods) pods=${2:?--pods wants a number}; shift 2 ;;
	--pods=*) pods=${1#*=}; shift ;;
	--keep) keep=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; extra=("$@"); break ;;
	*) echo "bench.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done
if [ "$(id -u)" -ne 0 ]; then
	echo "bench.sh: needs root (pods, mounts, CNI)" >&2
	exit 1
fi

bin=$repo/bin
# shellcheck source=hack/runtimes.sh
. "$repo/hack/runtimes.sh"
started=$SECONDS
bash "$repo/hack/install-deps.sh"
if [ -z "${MAKELEVEL:-}" ]; then
	make -C "$repo" --no-print-directory build bin/crictl bin/critest
fi

bridges=(crbench0 crbench1)
reap_stale '/tmp/corral-bench.*'
if ! compgen -G '/tmp/corral-bench.*' >/dev/null; then
	# No other run: bridges left by a killed one are stale.
	for br in "${bridges[@]}"; do
		ip link show "$br" >/dev/null 2>&1 && ip link delete "$br"
	done
fi
# A short path: unix socket paths under it must stay below 108 bytes.
work=$(mktemp -d /tmp/corral-bench.XXXXXX)
claim_work "$work"
images_pid=""
corral_pid="" corral_socket=""
ctrd_pid="" ctrd_socket=""

cleanup() {
	local status=$?
	set +e
	trap - EXIT INT TERM
	stop_runtime "$work/corrald" "$corral_pid" "$corral_socket"
	stop_runtime "$work/containerd" "$ctrd_pid" "$ctrd_socket"
	[ -n "$images_pid" ] && stop_pid "$images_pid"
	unmount_under "$work"
	local br
	for br in "${bridges[@]}"; do
		ip link show "$br" >/dev/null 2>&1 && ip link delete "$br"
	done
	if [ "$keep" = 1 ]; then
		log "kept $work"
	elif [ -n "$(mounts_under "$work")" ]; then
		log "still mounted under $work, not removing it:"
		mounts_under "$work" >&2
	else
		rm -rf --one-file-system "$work"
	fi
	log "run took $(((SECONDS - started) / 60))m$(((SECONDS - started) % 60))s"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building and pushing the images"
start_images "$work" "$bin"
write_cni_conf "$work/net-corrald/10-bench.conflist" corral-bench "${bridges[0]}" 10.88.241.0/24 "$work/ipam-corrald"
write_cni_conf "$work/net-containerd/10-bench.conflist" containerd-bench "${bridges[1]}" 10.88.242.0/24 "$work/ipam-containerd"
# Both at their default log level: what a node runs.
start_runtime corrald "$work/corrald" "$work/net-corrald" "$work/certs.d" info
corral_pid=$runtime_pid corral_socket=$runtime_socket
start_runtime containerd "$work/containerd" "$work/net-containerd" "$work/certs.d" info
ctrd_pid=$runtime_pid ctrd_socket=$runtime_socket

go_bin=$(command -v go || echo /usr/local/go/bin/go)
(cd "$repo" && "$go_bin" build -o "$work/cribench" ./hack/cribench)
out=$bin/bench/$(date -u +%Y%m%dT%H%M%SZ).json
mkdir -p "$work/out"
(cd "$repo" && "$work/cribench" -crictl "$bin/crictl" -critest "$bin/critest" -work "$work/out" \
	-out "$out" -pods "$pods" \
	-runtime "corral=$corral_socket:$corral_pid" -runtime "containerd=$ctrd_socket:$ctrd_pid" "${extra[@]}")
