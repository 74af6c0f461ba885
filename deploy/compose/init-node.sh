#!/bin/sh
# One-shot set-up of an agency's node directory for deploy/compose.yaml.
#
# Runs as root in the node image, with no network, before the node starts:
# copies the agency's TLS certificate and key (from deploy/tls/make-demo-ca.sh,
# mounted at /tls) into the data volume, owned by the node's user and mode 0600,
# then, on the first run only, `handover init` as that user. Prints the node's
# root fingerprint each time (`docker compose logs prison-init`).
#
# Environment: NODE (e.g. prison.example), KIND (prison|probation|exit).
set -eu
: "${NODE:?NODE is not set}" "${KIND:?KIND is not set}"
dir=/var/lib/handover
uid=10001
as_node() {
    setpriv --reuid="$uid" --regid="$uid" --clear-groups env HOME="$dir" "$@"
}

install -d -o "$uid" -g "$uid" -m 0700 "$dir" "$dir/tls"
for f in tls.crt tls.key ca.crt; do
    install -o "$uid" -g "$uid" -m 0600 "/tls/$f" "$dir/tls/$f"
done

if [ ! -f "$dir/handover.toml" ]; then
    # The DSN stays out of handover.toml: the node gets it as HANDOVER_DSN.
    as_node handover init --node "$NODE" --kind "$KIND" --dir "$dir" \
        --public-url "https://$NODE:8443" \
        --listen 0.0.0.0:8443 --local-listen 0.0.0.0:8480 \
        --tls-cert "$dir/tls/tls.crt" --tls-key "$dir/tls/tls.key"
    # Client side of mutual TLS: the certificate this node shows its peers, and
    # the CA that peers' client certificates must chain to.
    as_node sh -c "cat >> '$dir/handover.toml'" <<SETTINGS
tls_client_ca = "$dir/tls/ca.crt"
tls_client_cert = "$dir/tls/tls.crt"
tls_client_key = "$dir/tls/tls.key"
SETTINGS
fi
echo "$NODE fingerprint: $(as_node handover keys fingerprint --dir "$dir")"
