#!/bin/sh
# Pin the three demo agencies of deploy/compose.yaml to each other.
#
#   deploy/compose/pin-peers.sh          (after `docker compose -f deploy/compose.yaml up -d`)
#   COMPOSE="podman-compose" deploy/compose/pin-peers.sh
#
# In real life the root fingerprint reaches the other agency out of band (phone,
# letter, meeting); here all three nodes run on one machine, so the script reads
# each one and hands it straight to the others. Each peer's TLS certificate is
# checked against the demo CA (`--ca`).
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"
compose="${COMPOSE:-docker compose} -f $here/compose.yaml"
dir=/var/lib/handover

fingerprint() {
    $compose exec -T "$1" handover keys fingerprint --dir "$dir" | tr -d '\r'
}

for pair in prison:probation prison:exit probation:prison probation:exit exit:prison exit:probation; do
    local_service="${pair%%:*}"
    peer="${pair##*:}"
    echo "pinning $peer.example at $local_service.example"
    $compose exec -T "$local_service" handover peers add --dir "$dir" \
        --url "https://$peer.example:8443" --kind "$peer" \
        --fingerprint="$(fingerprint "$peer")" --ca "$dir/tls/ca.crt"
done
