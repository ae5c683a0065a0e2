#!/bin/sh
# Builder entrypoint: started as root, run the command as the caller's uid/gid
# (BUILDER_UID/BUILDER_GID) so files in the mounted SDK stay owned by the caller.
# That user gets passwordless sudo, which build.sh's rootfs steps expect.
set -eu

uid="${BUILDER_UID:-0}"
gid="${BUILDER_GID:-0}"
unset BUILDER_UID BUILDER_GID

if [ "$(id -u)" -ne 0 ] || [ "$uid" -eq 0 ]; then
    exec "$@"
fi

group=$(getent group "$gid" | cut -d: -f1 || true)
if [ -z "$group" ]; then
    group=builder
    groupadd -o -g "$gid" "$group"
fi
user=$(getent passwd "$uid" | cut -d: -f1 || true)
if [ -z "$user" ]; then
    user=builder
    useradd -o -u "$uid" -g "$gid" -M -d /home/builder -s /bin/bash "$user"
fi
home=$(getent passwd "$uid" | cut -d: -f6)
mkdir -p "$home"
chown "$uid:$gid" "$home"
printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$user" > /etc/sudoers.d/builder
chmod 0440 /etc/sudoers.d/builder

# A cache volume is created root-owned; hand it over (only when it is not yet ours).
if [ -n "${CCACHE_DIR:-}" ] && [ -d "$CCACHE_DIR" ] && [ "$(stat -c %u "$CCACHE_DIR")" != "$uid" ]; then
    chown -R "$uid:$gid" "$CCACHE_DIR"
fi

export HOME="$home" USER="$user" LOGNAME="$user"
exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
