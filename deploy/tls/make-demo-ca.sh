#!/bin/sh
# make-demo-ca.sh: a throw-away certificate authority and one TLS certificate per
# node, for the compose demo and for trying TLS between nodes. NOT for production:
# there, each agency's certificate comes from the CA the federation agreed on.
#
#   deploy/tls/make-demo-ca.sh [-o OUT_DIR] [-d DAYS] [NODE[,ALT_NAME...] ...]
#
# Defaults: OUT_DIR deploy/tls/demo, DAYS 365, nodes prison.example,
# probation.example and exit.example. Writes
#
#   OUT_DIR/ca.crt, OUT_DIR/ca.key       the demo CA (ECDSA P-256); kept and reused
#   OUT_DIR/NODE/tls.crt, tls.key        the node's certificate and key, with NODE
#                                        (and the ALT_NAMEs) as DNS names, usable
#                                        as server and as client certificate (mTLS)
#   OUT_DIR/NODE/ca.crt                  a copy of the CA certificate
#
# The file names are those of a Kubernetes TLS Secret, so
#   kubectl create secret generic handover-tls --from-file=OUT_DIR/NODE/
# makes the Secret the manifests in deploy/kubernetes expect. Existing node
# certificates are replaced; private keys are mode 0600. Needs only openssl.
set -eu

out="$(dirname "$0")/demo"
days=365
while getopts "o:d:h" opt; do
    case "$opt" in
        o) out="$OPTARG" ;;
        d) days="$OPTARG" ;;
        *) sed -n '2,22p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -gt 0 ] || set -- prison.example probation.example exit.example

umask 077
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -f "$out/ca.key" ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/ca.key"
    openssl req -x509 -new -sha256 -key "$out/ca.key" -days "$days" \
        -subj "/O=handover demo/CN=handover demo CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$out/ca.crt"
    chmod 0644 "$out/ca.crt"
    echo "made demo CA $out/ca.crt"
fi

for spec in "$@"; do
    node="${spec%%,*}"
    sans="DNS:$node"
    rest="${spec#"$node"}"
    for alt in $(echo "$rest" | tr ',' ' '); do
        sans="$sans,DNS:$alt"
    done
    dir="$out/$node"
    mkdir -p "$dir"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/tls.key"
    openssl req -new -sha256 -key "$dir/tls.key" -subj "/O=handover demo/CN=$node" \
        -out "$work/$node.csr"
    cat > "$work/$node.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$sans
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
    openssl x509 -req -sha256 -in "$work/$node.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$days" \
        -extfile "$work/$node.ext" -out "$dir/tls.crt" 2> "$work/x509.log" \
        || { cat "$work/x509.log" >&2; exit 1; }
    cp "$out/ca.crt" "$dir/ca.crt"
    chmod 0644 "$dir/tls.crt" "$dir/ca.crt"
    chmod 0600 "$dir/tls.key"
    echo "made $dir/tls.crt for $sans"
done
