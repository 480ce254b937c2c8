#!/bin/sh
# wasm-sysexts guest entry (installed at /etc/wsx/boot.sh in every VM kind): mount the payload
# disk, run its guest.sh, power off whatever happened.
dev=/dev/disk/by-label/WSXPAYLOAD
i=0
while [ ! -e "$dev" ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /run/wsx
if mount -o ro "$dev" /run/wsx; then
    sh /run/wsx/guest.sh
else
    echo "wsx: payload disk $dev not found" >/dev/console
fi
systemctl poweroff -ff
