#!/usr/bin/env bash
# The guide's private-CA appendix, done with pkiq on the embedded default (SQLite in
# ./pkiq-data): a root and an issuing CA, an Expressway cluster CSR made exactly as the guide
# makes it (openssl req ... -outform DER -sha1), signed "web client and server", checked with
# the real openssl, one peer revoked, a CRL, and a demoCA export that `openssl ca` keeps using.
# Safe to run again: it reuses the CAs and passphrase it made the first time.
# The CA passphrase is read from PKIQ_CA_PASSPHRASE_FILE by every pkiq command (and by the
# workers of `make run`), so no command below names it.
set -euo pipefail
export PKIQ_DATA_DIR="${PKIQ_DATA_DIR:-$PWD/pkiq-data}"
export PKIQ_CA_PASSPHRASE_FILE="${PKIQ_CA_PASSPHRASE_FILE:-$PKIQ_DATA_DIR/ca.pass}"
work="$PKIQ_DATA_DIR/walkthrough"
mkdir -p "$work"
chmod 700 "$PKIQ_DATA_DIR"
pass="$PKIQ_CA_PASSPHRASE_FILE"
if [ ! -s "$pass" ]; then
  (umask 077 && openssl rand -base64 24 > "$pass")
  echo "== new CA passphrase in $pass (mode 0600): keep it safe"
fi

step() { printf '\n== %s\n' "$*"; }

if ! pkiq ca show Root >/dev/null 2>&1; then
  step "root CA (RSA 4096, as the guide's genrsa -aes256 4096; SHA-256, not the guide's -sha1)"
  pkiq ca create Root --subject "/C=GB/O=Example Ltd/CN=Example Root CA" --key-type rsa4096 \
    --days 3650
  step "issuing CA signed by the root, with a CRL distribution point"
  pkiq ca create Issuing --parent Root \
    --subject "/C=GB/O=Example Ltd/CN=Example Issuing CA" --key-type ec-p384 --days 1825 \
    --policy policy_anything --copy-extensions copy \
    --crl-url http://pki.example.com/issuing.crl
fi
pkiq ca list

step "a cluster CSR made exactly as the guide's appendix makes it"
cat > "$work/openssl_request.cfg" <<'CFG'
[ req ]
distinguished_name = dn
req_extensions = v3_req
prompt = no
[ dn ]
C = GB
O = Example Ltd
OU = Video
CN = expe.example.com
[ v3_req ]
extendedKeyUsage=serverAuth, clientAuth
subjectAltName="DNS:expe.example.com,DNS:expe1.example.com,DNS:expe2.example.com"
CFG
openssl genrsa -out "$work/privatekey.pem" 2048 2>/dev/null
openssl req -new -key "$work/privatekey.pem" -config "$work/openssl_request.cfg" \
  -out "$work/certcsr.der" -outform DER -sha1
pkiq x509 decode "$work/certcsr.der"

step "sign it with the 'web client and server' profile (mutual TLS between Expressways)"
pkiq ca sign Issuing "$work/certcsr.der" --profile webclientandserver --out "$work/server.pem"
serial=$(openssl x509 -in "$work/server.pem" -noout -serial | cut -d= -f2)
pkiq cert get "$serial" --chain --out "$work/server-chain.pem"
pkiq ca show Root --pem > "$work/root.pem"
pkiq ca show Issuing --pem > "$work/issuing.pem"
openssl verify -CAfile "$work/root.pem" -untrusted "$work/issuing.pem" "$work/server.pem"

step "a second peer, then revoked (key compromise) and a fresh CRL"
openssl req -new -key "$work/privatekey.pem" -config "$work/openssl_request.cfg" \
  -subj "/C=GB/O=Example Ltd/OU=Video/CN=old-expe.example.com" -out "$work/old.csr" 2>/dev/null
pkiq ca sign Issuing "$work/old.csr" --profile webclientandserver --out "$work/old.pem"
old=$(openssl x509 -in "$work/old.pem" -noout -serial | cut -d= -f2)
pkiq ca revoke Issuing "$old" --reason keyCompromise
pkiq ca gencrl Issuing --out "$work/issuing.crl.pem"
pkiq ca status Issuing "$old"

step "openssl checks both against pkiq's CRL"
cat "$work/root.pem" "$work/issuing.pem" > "$work/trust.pem"
pkiq ca gencrl Root --out "$work/root.crl.pem" 2>/dev/null
cat "$work/root.crl.pem" "$work/issuing.crl.pem" > "$work/crls.pem"
openssl verify -crl_check_all -CAfile "$work/trust.pem" -CRLfile "$work/crls.pem" "$work/server.pem"
if openssl verify -crl_check_all -CAfile "$work/trust.pem" -CRLfile "$work/crls.pem" \
     "$work/old.pem" 2>&1; then
  echo "revoked certificate was accepted" >&2; exit 1
fi

step "an Expressway peer: key and CSR made by pkiq, signed, paired, its store published"
pkiq cluster show edge >/dev/null 2>&1 || pkiq cluster add edge --fqdn vcse.example.com
pkiq trustset show video >/dev/null 2>&1 || pkiq trustset create video Issuing
pkiq node show expe1.example.com >/dev/null 2>&1 || pkiq node add expe1.example.com --role E \
  --cluster edge --uc-domain example.com --trusted-set video
pkiq node csr expe1.example.com --discard >/dev/null 2>&1 || true   # a re-run starts afresh
pkiq node csr expe1.example.com --generate --key-type rsa2048 -O "Example Ltd" -C GB \
  --out "$work/expe1.csr"
pkiq ca sign Issuing "$work/expe1.csr" --profile webclientandserver --out "$work/expe1.pem"
pkiq node upload expe1.example.com --cert "$work/expe1.pem"   # pairs with the CSR's key
pkiq node publish expe1.example.com
pkiq node check expe1.example.com
store=$(pkiq node generations expe1.example.com | cut -d: -f1)/current
ls "$store"
openssl verify -CApath "$store/capath" -crl_check_all "$store/server.pem"

step "export the issuing CA as a demoCA that openssl ca keeps using"
export_dir="$work/demoCA-$(date -u +%Y%m%dT%H%M%SZ)"
pkiq ca export-openssl Issuing "$export_dir"
# openssl ca -status exits 1 whatever it finds, so read what it says
said=$(openssl ca -config "$export_dir/openssl.cnf" -passin "file:$pass" -status "$serial" 2>&1 || true)
echo "$said"
grep -q "$serial=Valid" <<<"$said"
echo
echo "done: files in $work"
