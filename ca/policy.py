"""OpenSSL ``policy`` sections: which DN fields a request must match, supply or may carry.

The semantics are those of ``openssl ca`` (apps/ca.c, ``do_body``): the issued subject is
built in policy order from the fields the policy names; fields it does not name are dropped
unless ``preserve`` is set, in which case the request's DN is kept as it is (after the checks).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from .errors import BadInput, PolicyViolation
from .names import field_oid, long_name

RULES = ("match", "supplied", "optional")


@dataclass(frozen=True)
class Policy:
    name: str
    fields: tuple[tuple[str, str], ...]  # (long field name, rule), in OpenSSL order
    preserve: bool = False

    def __post_init__(self):
        for field, rule in self.fields:
            field_oid(field)  # unknown field -> BadInput, as OpenSSL's "unknown object type"
            if rule not in RULES:
                raise BadInput(
                    f"policy {self.name}: {field} = {rule!r} is not one of {', '.join(RULES)}"
                )

    def to_dict(self) -> dict:
        return {"name": self.name, "fields": [list(f) for f in self.fields],
                "preserve": self.preserve}

    @classmethod
    def from_dict(cls, data: dict) -> Policy:
        return cls(data["name"], tuple((f, r) for f, r in data["fields"]),
                   bool(data.get("preserve", False)))

    @classmethod
    def parse(cls, text: str, preserve: bool = False) -> Policy:
        """A built-in name, or ``countryName=match,commonName=supplied,...``."""
        text = text.strip()
        if text in BUILTIN:
            return Policy(text, BUILTIN[text].fields, preserve)
        if "=" not in text:
            raise BadInput(
                f"unknown policy {text!r}: use {', '.join(BUILTIN)} or FIELD=RULE,FIELD=RULE"
            )
        fields = []
        for item in text.split(","):
            field, _, rule = item.partition("=")
            fields.append((long_name(field_oid(field)), rule.strip().lower()))
        return Policy("custom", tuple(fields), preserve)

    def check_against(self, ca_subject: x509.Name) -> None:
        """A ``match`` field the CA subject lacks would refuse every request: say so now."""
        for field, rule in self.fields:
            if rule == "match" and not ca_subject.get_attributes_for_oid(field_oid(field)):
                raise BadInput(f"policy {self.name}: {field} = match, but the CA subject has no "
                               f"{field}; choose another policy or add it to the CA subject")

    def apply(self, requested: x509.Name, ca_subject: x509.Name) -> x509.Name:
        """The subject to issue, or ``PolicyViolation`` naming the field and the rule."""
        issued: list[x509.NameAttribute] = []
        for field, rule in self.fields:
            oid = field_oid(field)
            values = requested.get_attributes_for_oid(oid)
            if not values:
                if rule == "optional":
                    continue
                raise PolicyViolation(
                    f"policy {self.name}: the {field} field is required ({rule}) and the "
                    "request has none", field, rule)
            if rule == "match":
                ca_values = {str(a.value) for a in ca_subject.get_attributes_for_oid(oid)}
                if not ca_values:
                    raise PolicyViolation(
                        f"policy {self.name}: {field} = match, but the CA certificate has no "
                        f"{field}; the policy is misconfigured", field, rule)
                for attr in values:
                    if str(attr.value) not in ca_values:
                        raise PolicyViolation(
                            f"policy {self.name}: the {field} field must match the CA "
                            f"certificate ({', '.join(sorted(ca_values))}), the request has "
                            f"{attr.value!r}", field, rule)
            issued.extend(values)
        return requested if self.preserve else x509.Name(issued)


POLICY_MATCH = Policy("policy_match", (
    ("countryName", "match"), ("stateOrProvinceName", "match"), ("organizationName", "match"),
    ("organizationalUnitName", "optional"), ("commonName", "supplied"),
    ("emailAddress", "optional"),
))
POLICY_ANYTHING = Policy("policy_anything", (
    ("countryName", "optional"), ("stateOrProvinceName", "optional"),
    ("localityName", "optional"), ("organizationName", "optional"),
    ("organizationalUnitName", "optional"), ("commonName", "supplied"),
    ("emailAddress", "optional"),
))
BUILTIN = {p.name: p for p in (POLICY_MATCH, POLICY_ANYTHING)}
