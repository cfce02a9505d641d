"""OpenSSL policy semantics (apps/ca.c do_body), one rule per test."""

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ca.errors import BadInput, PolicyViolation
from ca.names import openssl_oneline, parse_name
from ca.policy import POLICY_ANYTHING, POLICY_MATCH, Policy

CA = parse_name("/C=GB/ST=England/O=Example/CN=Example Root")


def test_match_accepts_equal_fields_and_orders_as_the_policy():
    req = parse_name("/CN=host.example.com/O=Example/ST=England/C=GB")
    issued = POLICY_MATCH.apply(req, CA)
    assert openssl_oneline(issued) == "/C=GB/ST=England/O=Example/CN=host.example.com"


def test_match_refuses_a_different_value_naming_field_and_rule():
    req = parse_name("/C=GB/ST=England/O=Other Corp/CN=host.example.com")
    with pytest.raises(PolicyViolation) as err:
        POLICY_MATCH.apply(req, CA)
    assert err.value.field == "organizationName" and err.value.rule == "match"
    assert "Other Corp" in str(err.value) and "Example" in str(err.value)


def test_match_refuses_a_missing_field():
    req = parse_name("/C=GB/O=Example/CN=host.example.com")
    with pytest.raises(PolicyViolation) as err:
        POLICY_MATCH.apply(req, CA)
    assert err.value.field == "stateOrProvinceName"


def test_supplied_field_must_be_present():
    req = parse_name("/C=GB/O=Example")
    with pytest.raises(PolicyViolation) as err:
        POLICY_ANYTHING.apply(req, CA)
    assert (err.value.field, err.value.rule) == ("commonName", "supplied")


def test_fields_the_policy_does_not_name_are_dropped():
    req = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h.example.com"),
                     x509.NameAttribute(NameOID.TITLE, "Video admin")])
    issued = POLICY_ANYTHING.apply(req, CA)
    assert issued.get_attributes_for_oid(NameOID.TITLE) == []


def test_preserve_keeps_the_request_dn_as_it_is():
    req = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h.example.com"),
                     x509.NameAttribute(NameOID.TITLE, "Video admin")])
    policy = Policy("policy_anything", POLICY_ANYTHING.fields, preserve=True)
    assert policy.apply(req, CA) == req


def test_match_against_a_ca_without_the_field_is_a_misconfiguration():
    policy = Policy.parse("localityName=match,commonName=supplied")
    with pytest.raises(PolicyViolation, match="misconfigured"):
        policy.apply(parse_name("/L=London/CN=h.example.com"), CA)


def test_custom_policy_parses_short_and_long_names():
    policy = Policy.parse("C=supplied, organizationName=optional, CN=supplied")
    assert policy.fields == (("countryName", "supplied"), ("organizationName", "optional"),
                             ("commonName", "supplied"))


@pytest.mark.parametrize("text", ["policy_nothing", "countryName=maybe", "colour=match"])
def test_bad_policies_are_refused(text):
    with pytest.raises(BadInput):
        Policy.parse(text)


def test_rfc4514_and_openssl_spellings_give_the_same_name():
    assert parse_name("CN=h.example.com,O=Example,C=GB") == parse_name(
        "/C=GB/O=Example/CN=h.example.com")


@pytest.mark.parametrize("text", ["", "/C=GBR/CN=x", "/CN", "/XX=1"])
def test_bad_subjects_are_refused(text):
    with pytest.raises(BadInput):
        parse_name(text)
