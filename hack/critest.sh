#!/usr/bin/env bash
# Runs critest, the kubelet maintainers' CRI conformance suite (cri-tools,
# pinned in the Makefile), against corrald or against Debian's containerd,
# offline, and compares the outcome of every spec with an expected-results
# file.
#
# What it does, all of it on loopback or in namespaces the runtime creates:
#   1. builds corrald, crictl and critest (make build bin/crictl bin/critest)
#   2. starts Debian's docker-registry on 127.0.0.1 and pushes the images
#      critest pulls under their own names (integration/critestimages, served
#      by hack/critestimages), with a certs.d dir that mirrors
#      registry.k8s.io, gcr.io, k8s.gcr.io, docker.io, ... to it
#   3. starts the runtime on its own root, state and socket under a temp dir,
#      with that certs.d dir, a bridge CNI network of its own and an IPC
#      namespace of its own, which critest joins
#   4. runs critest unmodified, prints "N passed, N failed, N skipped" and the
#      failed specs, and compares every outcome with the expected-results
#      file: a spec outside the list that does not pass, or a listed spec
#      that passes or changes outcome, fails the run
#   5. removes its pods, stops what it started (by pid), unmounts what was
#      mounted under its temp dir (critest's own temp dirs are there too),
#      deletes the CNI bridge, and keeps the report and logs in
#      bin/critest-results/ENDPOINT
#
# critest is run unmodified rather than with --registry-prefix: that flag
# drops tags and digests when it rewrites a name, and many specs then look
# images up by the original name.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: hack/critest.sh [options] [-- critest flags]

  --endpoint corrald|containerd
        the runtime to test (default corrald): bin/corrald, or Debian's
        containerd 1.6 with its CRI plugin
  --expected FILE
        the expected-results file (default hack/critest-expected.txt for
        corrald, hack/critest-expected-containerd.txt for containerd)
  --update-expected
        rewrite the expected-results file from this run instead of comparing;
        reasons already in the file are kept, new ones are derived from the
        run ("not implemented yet (issue N): CALL" for Unimplemented
        answers, "FIXME: ..." for other failures: explain those)
  --focus REGEX
        run only the matching specs; outcomes are then reported, not compared
  --keep
        keep the temp dir (runtime root and state, registry storage)
  -h, --help
        this help

Needs root. Prints the run time; the whole run takes a few minutes.
EOF
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
endpoint=corrald
expected=""
update=0
focus=""
keep=0
extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--endpoint) endpoint=${2:?--endpoint wants corrald or containerd}; shift 2 ;;
	--endpoint=*) endpoint=${1#*=}; shift ;;
	--expected) expected=${2:?--expected wants a file}; shift 2 ;;
	--expected=*) expected=${1#*=}; shift ;;
	--update-expected) update=1; shift ;;
	--focus) focus=${2:?--focus wants a regular expression}; shift 2 ;;
	--focus=*) focus=${1#*=}; shift ;;
	--keep) keep=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; extra=("$@"); break ;;
	*) echo "critest.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done
case "$endpoint" in
corrald) : "${expected:=$repo/hack/critest-expected.txt}" ;;
containerd) : "${expected:=$repo/hack/critest-expected-containerd.txt}" ;;
*) echo "critest.sh: --endpoint must be corrald or containerd" >&2; exit 2 ;;
esac
if [ -n "$focus" ] && [ "$update" = 1 ]; then
	echo "critest.sh: --update-expected needs a full run, not --focus" >&2
	exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "critest.sh: needs root (pods, mounts, CNI)" >&2
	exit 1
fi

# Specs the harness skips on every runtime (--ginkgo.skip), as "REGEX # REASON".
# None so far: critest skips by itself what this host or runtime lacks
# (AppArmor: not in this kernel; SELinux: disabled, so its specs are not even
# defined; NRI: no --nri-socket for containerd 1.6, whose NRI is v0.1; user namespaces, image
# volumes, recursive read-only mounts, pod metrics, supplemental groups
# policy: when the runtime does not announce them), and the one spec that
# cannot pass offline, the image pinned by an upstream digest, is left to fail
# and listed as such, as issue 5's figures for containerd and CRI-O count it.
# A skipped spec shows up in the expected-results file as
# "skip ... # not run: filtered out ...".
harness_skips=(
)

bin=$repo/bin
# shellcheck source=hack/runtimes.sh
. "$repo/hack/runtimes.sh"
started=$SECONDS
bash "$repo/hack/install-deps.sh"
# make critest builds these first; run directly, build them here.
if [ -z "${MAKELEVEL:-}" ]; then
	make -C "$repo" --no-print-directory build bin/crictl bin/critest
fi

# Host ports critest's specs bind or map; taken ones would fail specs for
# reasons that have nothing to do with the runtime.
for port in 12000 12001 12002 12003; do
	if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
		echo "critest.sh: port $port is in use; critest needs 12000-12003 free" >&2
		exit 1
	fi
done

# A short path: unix socket paths under it must stay below 108 bytes.
reap_stale '/tmp/corral-critest.*'
work=$(mktemp -d /tmp/corral-critest.XXXXXX)
# Searchable by all, as /var/lib and /run are: a pod with a user namespace
# runs as an unprivileged host ID, which must reach its rootfs below the
# runtime's root and state.
chmod 0711 "$work"
claim_work "$work"
results=$bin/critest-results/$endpoint
mkdir -p "$results"
bridge=crtest0 # the CNI bridge, created by the bridge plugin on first use
images_pid=""
runtime_pid=""
runtime_socket=""
runtime_nri_socket=""

cleanup() {
	local status=$?
	set +e
	trap - EXIT INT TERM
	stop_runtime "$work" "$runtime_pid" "$runtime_socket"
	[ -n "$images_pid" ] && stop_pid "$images_pid"
	# critest's own temp dirs are under the work dir too.
	unmount_under "$work"
	ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge"
	for f in report.json junit.xml critest.log rt/runtime.log images.log images.out registry/registry.log; do
		[ -e "$work/$f" ] && cp "$work/$f" "$results/"
	done
	if [ "$keep" = 1 ]; then
		log "kept $work"
	elif [ -n "$(mounts_under "$work")" ]; then
		log "still mounted under $work, not removing it:"
		mounts_under "$work" >&2
	else
		rm -rf --one-file-system "$work"
	fi
	log "reports and logs in $results"
	log "run took $(((SECONDS - started) / 60))m$(((SECONDS - started) % 60))s"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building and pushing critest's images"
start_images "$work" "$bin"
write_cni_conf "$work/net.d/10-corral-critest.conflist" corral-critest "$bridge" 10.88.240.0/24 "$work/cni-ipam"
# corrald logs at debug level: a failed spec's log says what it asked.
level=debug
[ "$endpoint" = containerd ] && level=info
start_runtime "$endpoint" "$work/rt" "$work/net.d" "$work/certs.d" "$level"
socket=$runtime_socket

# --- critest -------------------------------------------------------------
args=(
	--runtime-endpoint "unix://$socket" --image-endpoint "unix://$socket"
	--ginkgo.json-report "$work/report.json" --ginkgo.junit-report "$work/junit.xml"
	--ginkgo.no-color --ginkgo.timeout 50m
)
for s in "${harness_skips[@]}"; do
	args+=(--ginkgo.skip "${s%% # *}")
done
[ -n "$runtime_nri_socket" ] && args+=(--nri-socket "$runtime_nri_socket")
[ -n "$focus" ] && args+=(--ginkgo.focus "$focus")
log "running critest (log: $results/critest.log)"
# critest reads /etc/crictl.yaml when no --config names another: a config of
# the run's own keeps a node's file out of the way.
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\n' "$socket" "$socket" >"$work/crictl.yaml"
args+=(--config "$work/crictl.yaml")
# TMPDIR: the specs' host-side temp dirs (log dirs, volumes, mount
# propagation sources, seccomp profiles) stay under the work dir, so a spec
# that fails before its own cleanup leaves nothing behind.
mkdir -p "$work/tmp"
set +e
(cd "$work" && TMPDIR=$work/tmp nsenter --ipc="/proc/$runtime_pid/ns/ipc" -- \
	"$bin/critest" "${args[@]}" "${extra[@]}") >"$work/critest.log" 2>&1
critest_status=$?
set -e
if [ ! -s "$work/report.json" ]; then
	log "critest wrote no report (exit $critest_status):"
	tail -40 "$work/critest.log" >&2
	exit 1
fi

results_args=(-report "$work/report.json" -expected "$expected" -endpoint "$endpoint")
if [ "$update" = 1 ]; then
	results_args+=(-update)
elif [ -n "$focus" ]; then
	results_args+=(-compare=false)
fi
set +e
"$work/critestimages" results "${results_args[@]}"
status=$?
set -e
exit "$status"
