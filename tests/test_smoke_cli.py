"""End-to-end through the CLI on both databases: create, sign, revoke, CRL."""

from cryptography import x509

from .conftest import make_csr


def test_create_sign_revoke_crl(pkiq, tmp_path):
    assert pkiq("ca", "create", "Root", "--subject", "/C=GB/O=Example/CN=Example Root",
                "--key-type", "ec-p256").exit_code == 0
    csr = tmp_path / "req.pem"
    csr.write_bytes(make_csr("expe1.example.com", sans=("expe1.example.com",)))
    out = tmp_path / "cert.pem"
    result = pkiq("ca", "sign", "Root", csr, "--out", out)
    assert result.exit_code == 0, result.output
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    serial = f"{cert.serial_number:X}"
    assert pkiq("ca", "revoke", "Root", serial, "--reason", "keyCompromise").exit_code == 0
    crl_path = tmp_path / "crl.der"
    assert pkiq("ca", "gencrl", "Root", "--out", crl_path, "--der").exit_code == 0
    crl = x509.load_der_x509_crl(crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
