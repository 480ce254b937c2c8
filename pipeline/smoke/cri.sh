# The smoke test's CRI steps (pipeline/smoke/cri.sh, on the payload disk as $WSX_DIR/cri.sh),
# one subcommand per plan step; crictl comes from the cri-tools support image.
#   cri.sh up                   restart containerd on the merged config, wait for its CRI
#   cri.sh handler NAME TYPE    NAME is a registered runtime handler of TYPE; runc is intact
#   cri.sh pod NAME IMAGE       a pod with handler NAME runs IMAGE; print its id and log
set -u
W=/run/wsx-cri
mkdir -p "$W"
# crictl's endpoints in its own config file (a host has no /etc/crictl.yaml to find).
printf 'runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 60\n' \
    unix:///run/containerd/containerd.sock unix:///run/containerd/containerd.sock > "$W/crictl.yaml"
export CRI_CONFIG_FILE=$W/crictl.yaml
journal() { journalctl -u containerd.service --no-pager -o cat | tail -n "${1:-15}"; }
# On failure: containerd's recent log, then the reason as the last line (the report's reason).
fail() { echo "--- containerd log:"; journal 10; echo "$1"; exit 1; }
# The last line of a failed command's stderr, which names the problem.
last() { tail -n 1 "$W/err"; }
# containerd's last complaint since this start (a plugin that failed to load, a bad config),
# not systemd's lines about the unit ("Failed to start ...", "containerd.service: ...").
problem() {
    journalctl -u containerd.service -o cat --since "@$START" | grep -iE "error|fatal|failed to" |
        grep -vE "^(Failed to start |containerd\.service: )" | tail -n 1
}
START=$(date +%s)
info() { crictl info -o go-template --template "$1" 2>"$W/err"; }

case "$1" in
up)
    # Images merged after boot: containerd reads its config (the drop-in's) only at start.
    if ! systemctl restart containerd.service; then
        fail "containerd did not start: $(problem)"
    fi
    systemctl show -p Environment containerd.service
    containerd --version
    crictl version 2>"$W/err" || fail "crictl version: $(last) ($(problem))"
    ;;
handler)
    # shellcheck disable=SC2016 # a Go template for crictl, not shell
    runtimes=$(info '{{range $k, $v := .config.containerd.runtimes}}{{$k}}={{$v.runtimeType}} {{end}}') ||
        fail "crictl info: $(last)"
    echo "CRI runtime handlers: $runtimes"
    case " $runtimes" in
    *" $2=$3 "*) ;;
    *) echo "handler $2 ($3) is not registered with containerd's CRI plugin"; exit 1 ;;
    esac
    cgroup=$(info '{{.config.containerd.runtimes.runc.options.SystemdCgroup}}')
    echo "runc SystemdCgroup: $cgroup"
    [ "$cgroup" = true ] || { echo "Flatcar's runc handler lost SystemdCgroup = true"; exit 1; }
    echo "handler $2 registered"
    ;;
pod)
    handler=$2 image=$3 name=wsx-$2
    for tar in "$WSX_DIR/pause-oci.tar" "$WSX_DIR/hello-oci.tar"; do
        ctr -n k8s.io images import "$tar" >/dev/null 2>"$W/err" || fail "ctr import: $(last)"
    done
    # Host network (no CNI needed); a systemd slice as parent, as the systemd cgroup driver
    # wants (kubelet uses kubepods-*.slice).
    cat > "$W/$handler-pod.json" <<JSON
{"metadata": {"name": "$name", "namespace": "default", "uid": "$name", "attempt": 0},
 "log_directory": "$W/logs/$handler",
 "linux": {"cgroup_parent": "wsx.slice",
           "security_context": {"namespace_options": {"network": 2}}}}
JSON
    cat > "$W/$handler-ctr.json" <<JSON
{"metadata": {"name": "hello"}, "image": {"image": "$image"}, "log_path": "hello.log",
 "linux": {}}
JSON
    pod=$(crictl runp --runtime "$handler" "$W/$handler-pod.json" 2>"$W/err") ||
        fail "crictl runp: $(last)"
    echo "pod $pod handler $handler"
    cid=$(crictl create --no-pull "$pod" "$W/$handler-ctr.json" "$W/$handler-pod.json" \
          2>"$W/err") || fail "crictl create: $(last)"
    crictl start "$cid" >/dev/null 2>"$W/err" || fail "crictl start: $(last)"
    state=
    for _ in $(seq 300); do
        state=$(crictl inspect -o go-template --template '{{.status.state}}' "$cid")
        [ "$state" = CONTAINER_EXITED ] && break
        sleep 0.5
    done
    code=$(crictl inspect -o go-template --template '{{.status.exitCode}}' "$cid")
    echo "container $cid image $image state $state exit $code"
    echo "crictl logs:"
    crictl logs "$cid"
    crictl stopp "$pod" >/dev/null && crictl rmp "$pod" >/dev/null
    [ "$state" = CONTAINER_EXITED ] && [ "$code" = 0 ] ||
        fail "the container did not exit 0 (state $state, exit $code)"
    ;;
*)
    echo "cri.sh: unknown step $1"; exit 2
    ;;
esac
