#!/bin/sh
# Start coturn with turnserver.conf and the secret it shares with callbutton (a Docker secret):
# the file's static-auth-secret placeholder is dropped and the real secret written in its place,
# into a copy only coturn's user can read. Further arguments go to turnserver.
# deploy/compose.yaml runs it; tests/test_turn.py runs it too, with test-only overrides.
set -eu

config=${TURN_CONFIG:-/etc/coturn/turnserver.conf}
secret_file=${TURN_SECRET_FILE:-/run/secrets/turn_secret}
rendered=${TURN_RENDERED_CONFIG:-/tmp/turnserver.conf}

secret=$(cat "$secret_file")
case "$secret" in
  "" | *REPLACE-WITH*)
    echo "coturn: no TURN secret in $secret_file (the same as callbutton's CALLBUTTON_TURN_SECRET_FILE)" >&2
    exit 1
    ;;
esac

umask 077
grep -v '^static-auth-secret=' "$config" > "$rendered"
printf 'static-auth-secret=%s\n' "$secret" >> "$rendered"
exec turnserver -c "$rendered" "$@"
