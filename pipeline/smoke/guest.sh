# The smoke test's guest program (pipeline/smoke/guest.sh), run by the VM harness's prelude
# (pipeline/vm/guest/prelude.sh: wsx_frame, wsx_b64, wsx_ms, $WSX_DIR).
#
# The plan is data on the payload disk, never generated shell:
#   $WSX_DIR/plan/<extension>/image     file name of its image under $WSX_DIR/images/
#   $WSX_DIR/plan/<extension>/steps/<N> the Nth smoke command (sh -c), N = 0, 1, ...
#   $WSX_DIR/plan-timeout               seconds each command may take
#   $WSX_DIR/support/<extension>.raw     tools the commands use (crictl, containerd), merged
#                                       with the images but not reported
#
# All images merge at once. Any image that did not merge is then tried alone (debug log kept as
# its reason) and held out, and the rest merged again, so one broken image never hides the
# results of the others. Then the commands of merged images run one by one.
P=$WSX_DIR/plan
O=/run/wsx-out
STEP_TIMEOUT=$(cat "$WSX_DIR/plan-timeout")
ALL=$(ls "$P")
mkdir -p /run/extensions /run/wsx-hold "$O" /run/wsx-home
export HOME=/run/wsx-home

# Flatcar's Ignition links images into /etc/extensions; elsewhere they go to /run/extensions.
where() {
  if [ -L "/etc/extensions/$1.raw" ]; then echo /etc/extensions; else echo /run/extensions; fi
}
link() {
  [ -L "/etc/extensions/$1.raw" ] || ln -sf "$WSX_DIR/images/$(cat "$P/$1/image")" \
    "/run/extensions/$1.raw"
}
hold() {
  d=$(where "$1"); echo "$d" > "/run/wsx-hold/$1.dir"
  mv "$d/$1.raw" "/run/wsx-hold/$1.raw"
}
release() { mv "/run/wsx-hold/$1.raw" "$(cat "/run/wsx-hold/$1.dir")/$1.raw"; }
merged() { [ -e "/usr/lib/extension-release.d/extension-release.$1" ]; }
merge() {
  systemd-sysext refresh >"$O/$1.log" 2>&1; rc=$?
  out=$(wsx_b64 "$O/$1.log")
  wsx_frame "{\"event\": \"merge\", \"phase\": \"$1\", \"exit\": $rc, \"output_b64\": \"$out\"}"
}
why() {
  grep -iE "$1|extension-release|architecture|not |fail|error|refus|skip|mismatch" \
    "$O/solo-$1.log" | grep -viE "^(Found|Successfully)" | tail -n 12 > "$O/why-$1.log"
  [ -s "$O/why-$1.log" ] || tail -n 12 "$O/solo-$1.log" > "$O/why-$1.log"
}
solo() {
  for m in $ALL; do [ "$m" = "$1" ] || hold "$m"; done
  SYSTEMD_LOG_LEVEL=debug systemd-sysext refresh >"$O/solo-$1.log" 2>&1
  if merged "$1"; then touch "$O/ok-$1"; fi
  systemd-sysext unmerge >/dev/null 2>&1
  for m in $ALL; do [ "$m" = "$1" ] || release "$m"; done
  why "$1"
}
report() {
  if merged "$1"; then m=true; else m=false; fi
  r=""; [ -e "$O/why-$1.log" ] && r=$(wsx_b64 "$O/why-$1.log" 2000)
  wsx_frame "{\"event\": \"image\", \"image\": \"$1\", \"merged\": $m, \"reason_b64\": \"$r\"}"
}
step() {  # step NAME INDEX
  s=$(wsx_ms)
  timeout -k 5 "$STEP_TIMEOUT" sh -c "$(cat "$P/$1/steps/$2")" >"$O/step.log" 2>&1 </dev/null
  rc=$?; e=$(wsx_ms)
  out=$(wsx_b64 "$O/step.log")
  wsx_frame "{\"event\": \"step\", \"image\": \"$1\", \"index\": $2, \"exit\": $rc, \
\"ms\": $((e - s)), \"output_b64\": \"$out\"}"
}

for s in "$WSX_DIR"/support/*.raw; do [ -e "$s" ] && ln -sf "$s" /run/extensions/; done
for n in $ALL; do link "$n"; done
merge first
BAD=""
for n in $ALL; do merged "$n" || BAD="$BAD $n"; done
if [ -n "$BAD" ]; then
  for n in $BAD; do solo "$n"; done
  for n in $BAD; do [ -e "$O/ok-$n" ] || hold "$n"; done
  merge retry
fi
for n in $ALL; do report "$n"; done
systemd-sysext status >"$O/status.log" 2>&1
wsx_frame "{\"event\": \"status\", \"output_b64\": \"$(wsx_b64 "$O/status.log" 8000)\"}"
for n in $ALL; do
  merged "$n" || continue
  i=0
  while [ -e "$P/$n/steps/$i" ]; do step "$n" "$i"; i=$((i + 1)); done
done
wsx_frame '{"event": "done"}'
