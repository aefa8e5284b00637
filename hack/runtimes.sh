# shellcheck shell=bash
# Sourced by hack/critest.sh and hack/bench.sh: what both need to run a CRI
# runtime offline on a work dir of its own and to leave nothing behind.
#
#   start_images WORK BIN        the loopback registry with critest's images
#                                (hack/critestimages); sets images_pid, registry
#   write_cni_conf FILE NAME BRIDGE SUBNET IPAMDIR
#                                a bridge network of the caller's own
#   start_runtime ENDPOINT DIR NETDIR CERTS LOGLEVEL
#                                corrald (bin/) or Debian's containerd with its
#                                CRI plugin, root, state and sockets under DIR,
#                                in an IPC namespace of its own; sets
#                                runtime_pid and runtime_socket
#   stop_runtime DIR PID SOCKET  removes its pods through the runtime, stops
#                                it, then kills containers and shims that
#                                outlived it (found under DIR)
#   claim_work WORK              marks WORK as this script's (owner.pid)
#   reap_stale GLOB              cleans up the work dirs of runs killed
#                                before their cleanup (runtime.pid,
#                                images.pid), as their cleanup would have
#   unmount_under DIR            unmounts everything under DIR, deepest first
#   stop_pid PID [GRACE]         SIGTERM, then SIGKILL after GRACE seconds
#
# Everything is stopped by the pid this shell started, never by name.

runtimes_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runtimes_bin=$runtimes_repo/bin

log() { echo "${0##*/}: $*" >&2; }

# stop_pid ends one process this script started: SIGTERM, then SIGKILL
# after a grace period.
stop_pid() {
	local pid=$1 grace=${2:-20}
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq $((grace * 10))); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "pid $pid ignored SIGTERM for ${grace}s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

# wait_for waits until a command succeeds, as long as pid lives.
wait_for() {
	local what=$1 pid=$2 secs=$3
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$what exited during start-up"
			return 1
		fi
		if [ $SECONDS -ge $deadline ]; then
			log "$what not ready after ${secs}s"
			return 1
		fi
		sleep 0.2
	done
}

# closed_fds runs a command with only stdin, stdout and stderr open. The
# registry and the runtimes run in sessions of their own and outlive a
# script killed with SIGKILL; they must not keep what the script held open,
# above all flock's lock on /tmp/corral-heavy.lock, which every heavy test
# of every helper waits for.
closed_fds() {
	local fd
	for fd in /proc/$BASHPID/fd/*; do
		fd=${fd##*/}
		if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
	done
	exec "$@"
}

# claim_work marks WORK as this script's, so that reap_stale leaves it
# alone while the script lives.
claim_work() { echo $$ >"$1/owner.pid"; }

# started_under tells whether PID is a process whose command line names
# DIR: a pid file of a dead run may name a pid reused since.
started_under() {
	[ -n "$1" ] && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF "$2/"
}

# reap_stale cleans up after runs that were killed before their cleanup
# could run (SIGKILL): in each dir matching GLOB whose owner is gone, it
# stops the runtimes with their pods and shims and the registry, unmounts
# what is mounted, and removes the dir.
reap_stale() {
	local work owner f dir pid
	for work in $1; do
		[ -f "$work/owner.pid" ] || continue
		owner=$(cat "$work/owner.pid")
		if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
			continue
		fi
		log "cleaning up after a run killed before its cleanup: $work"
		for f in "$work"/runtime.pid "$work"/*/runtime.pid; do
			[ -f "$f" ] || continue
			dir=$(dirname "$f") pid=$(cat "$f")
			started_under "$pid" "$dir" || pid=""
			stop_runtime "$dir" "$pid" "$(cat "$dir/runtime.socket" 2>/dev/null)"
		done
		pid=$(cat "$work/images.pid" 2>/dev/null)
		if started_under "$pid" "$work"; then stop_pid "$pid"; fi
		unmount_under "$work"
		if [ -z "$(mounts_under "$work")" ]; then rm -rf --one-file-system "$work"; fi
	done
}

# mounts_under prints the mount points under DIR, deepest first.
mounts_under() {
	awk -v w="$1/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

unmount_under() {
	local m
	for m in $(mounts_under "$1"); do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
}

# start_images builds critest's images (integration/critestimages), starts
# Debian's docker-registry on a free loopback port and pushes them, with a
# certs.d dir under WORK that mirrors registry.k8s.io, gcr.io, docker.io, ...
# to it. Sets images_pid (the helper that owns the registry) and registry.
start_images() {
	local work=$1 bin=$2
	local go_bin
	go_bin=$(command -v go || echo /usr/local/go/bin/go)
	(cd "$runtimes_repo" && "$go_bin" build -o "$work/critestimages" ./hack/critestimages)
	# setsid: a Ctrl-C reaches the foreground job, while cleanup stops the
	# daemons in order.
	closed_fds setsid "$work/critestimages" serve -dir "$work/registry" -certs "$work/certs.d" \
		-pause "$bin/corral-pause" -deb-cache "$bin/critest-debs" \
		>"$work/images.out" 2>"$work/images.log" &
	images_pid=$!
	echo "$images_pid" >"$work/images.pid"
	if ! wait_for "the image registry" "$images_pid" 300 grep -qx ready "$work/images.out"; then
		cat "$work/images.log" >&2
		return 1
	fi
	registry=$(awk '$1 == "registry" { print $2 }' "$work/images.out")
	log "registry on $registry, $(grep -c @ "$work/images.out") names pushed"
}

# write_cni_conf writes a bridge network of the caller's own: its subnet is
# used only by the pods' namespaces and the bridge (the host's address on
# it). No default route and no masquerading: a pod reaches the host and
# other pods, nothing beyond. host-local keeps its leases in IPAMDIR.
write_cni_conf() {
	local file=$1 name=$2 bridge=$3 subnet=$4 ipam=$5
	mkdir -p "$(dirname "$file")"
	cat >"$file" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$name",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$subnet" }]],
        "dataDir": "$ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
}

# start_runtime starts ENDPOINT (corrald or containerd) with its root,
# state, sockets, runc state and the pods' network namespaces under DIR, the
# CNI config dir NETDIR and the registry hosts dir CERTS, logging to
# DIR/runtime.log, and waits until it answers crictl. It runs in an IPC
# namespace of its own (to the runtime and its pods that namespace is the
# host's): critest's HostIpc specs leave a shared memory segment in it.
start_runtime() {
	local endpoint=$1 dir=$2 netdir=$3 certs=$4 level=${5:-info}
	mkdir -p "$dir"
	case "$endpoint" in
	corrald)
		cat >"$dir/corrald.toml" <<EOF
[registry]
config_path = "$certs"
[network]
conf_dir = "$netdir"
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
[streaming]
address = "127.0.0.1:0"
# NRI plugins of the run only (critest's own connect to the socket).
# critest's synchronization specs hold a plugin's Synchronize for 2s on
# purpose, which NRI's default request timeout (2s) would cut.
[nri]
socket_path = "$dir/state/nri.sock"
plugin_path = "$dir/nri/plugins"
plugin_config_path = "$dir/nri/conf.d"
plugin_request_timeout = "10s"
EOF
		runtime_socket=$dir/state/corral.sock
		runtime_nri_socket=$dir/state/nri.sock
		# PATH: corrald finds containerd-shim-corral-v2 next to it this way.
		PATH="$runtimes_bin:$PATH" closed_fds setsid unshare --ipc "$runtimes_bin/corrald" --config "$dir/corrald.toml" \
			--root "$dir/root" --state "$dir/state" --log-level "$level" \
			>"$dir/runtime.log" 2>&1 &
		runtime_pid=$!
		;;
	containerd)
		if ! command -v containerd >/dev/null; then
			log "containerd is not installed (hack/install-deps.sh)"
			return 1
		fi
		# The sandbox image is the harness's own (critestimages.SandboxPause).
		# restrict_oom_score_adj: this host lacks CAP_SYS_RESOURCE, so a
		# negative oom_score_adj cannot be set.
		cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[debug]
  level = "$level"
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$netdir"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$certs"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$dir/runc"
EOF
		runtime_socket=$dir/containerd.sock
		# containerd 1.6 has only NRI v0.1, which critest's plugins cannot
		# speak: its NRI specs skip.
		runtime_nri_socket=""
		closed_fds setsid unshare --ipc containerd --config "$dir/config.toml" >"$dir/runtime.log" 2>&1 &
		runtime_pid=$!
		;;
	*)
		log "unknown runtime $endpoint (corrald or containerd)"
		return 1
		;;
	esac
	echo "$runtime_pid" >"$dir/runtime.pid"
	echo "$runtime_socket" >"$dir/runtime.socket"
	if ! wait_for "$endpoint" "$runtime_pid" 30 "$runtimes_bin/crictl" --runtime-endpoint "unix://$runtime_socket" --timeout 2s version; then
		tail -40 "$dir/runtime.log" >&2
		return 1
	fi
	log "$endpoint (pid $runtime_pid) serving on $runtime_socket"
}

# stop_runtime removes the runtime's pods through it (that runs CNI DEL and
# stops the shims), stops it, then ends whatever outlived it: containers, by
# their runc state under DIR, and shims, by the pid files they wrote there.
stop_runtime() {
	local dir=$1 pid=$2 socket=$3
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ -n "$socket" ]; then
		timeout 120 "$runtimes_bin/crictl" --runtime-endpoint "unix://$socket" --timeout 60s rmp --all --force >/dev/null 2>&1
	fi
	[ -n "$pid" ] && stop_pid "$pid"
	local root id pidfile spid
	for root in $(find "$dir" -maxdepth 6 -type f -name state.json -path '*runc*' -printf '%h\n' 2>/dev/null | xargs -r -n1 dirname | sort -u); do
		for id in $(runc --root "$root" list -q 2>/dev/null); do
			runc --root "$root" kill -a "$id" KILL 2>/dev/null
			runc --root "$root" delete -f "$id" 2>/dev/null
		done
	done
	while read -r pidfile; do
		spid=$(cat "$pidfile" 2>/dev/null)
		if [ -n "$spid" ] && tr '\0' ' ' <"/proc/$spid/cmdline" 2>/dev/null | grep -q 'shim'; then
			stop_pid "$spid" 5
		fi
	done < <(find "$dir" -name shim.pid 2>/dev/null)
	return 0
}
