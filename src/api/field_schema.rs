//! Schemas of single fields that `#[schema(schema_with = ...)]` attributes on the request types
//! name, and the small builders the document shares. A leaf: the request types (`globalpci`,
//! `pages`, `relay`) and the document (`openapi`) both use it, so neither depends on the other
//! both ways.

use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};

pub(super) fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A string that is one of `values`.
pub(super) fn one_of(values: &[&str]) -> Schema {
    string()
        .enum_values(Some(values.iter().copied()))
        .build()
        .into()
}

pub(super) fn schema_ref(name: &str) -> RefOr<Schema> {
    Ref::from_schema_name(name).into()
}

/// A relay leg's `remote` (see `parse_remote` in `relay.rs`): `ip:port`, `[ipv6]:port`, `ip`,
/// `[ipv6]`, or `ip:lo-hi` / `[ipv6]:lo-hi` (ports above 0, in either order), on a unicast host.
/// The schema states all that the handler checks, so a schema-valid remote is never a 400: a
/// negative lookahead (ECMA-262, as JSON Schema patterns are) refuses, in every spelling the
/// grammar allows, the hosts `crate::media::is_unicast_host` refuses.
fn remote_pattern() -> String {
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let v4 = format!("{octet}(\\.{octet}){{3}}");
    let h = "[0-9a-fA-F]{1,4}";
    let v6 = format!(
        "(({h}:){{7}}{h}|({h}:){{1,7}}:|({h}:){{1,6}}:{h}|({h}:){{1,5}}(:{h}){{1,2}}|({h}:){{1,4}}(:{h}){{1,3}}|({h}:){{1,3}}(:{h}){{1,4}}|({h}:){{1,2}}(:{h}){{1,5}}|{h}:(:{h}){{1,6}}|:((:{h}){{1,7}}|:))"
    );
    let nz_port =
        "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
    let host = format!("({v4}|\\[{v6}\\])");
    format!(
        "^(?!{})({v4}|{v6}|\\[{v6}\\]|{host}:{nz_port}|{host}:{nz_port}-{nz_port})$",
        not_unicast()
    )
}

/// The start of a remote whose host is not unicast: IPv4 0.x.x.x, multicast (224-239.x.x.x) or
/// broadcast; IPv6 unspecified (only zeros and colons), multicast (ffxx:…), or IPv4-mapped
/// (`::ffff:hhhh:hhhh`, however its zeros are compressed) onto such an IPv4 address.
fn not_unicast() -> String {
    let h = "[0-9a-fA-F]{1,4}";
    let z = "0{1,4}";
    // The mapped address's high half whose first octet is 0 or 224-239.
    let bad_high = "(0{0,2}[0-9a-fA-F]{1,2}|[eE][0-9a-fA-F]{3})";
    let mapped = format!(
        "\\[?(({z}:){{5}}|({z}(:{z}){{0,4}})?::({z}:){{0,4}})[fF]{{4}}(:{bad_high}(:{h}|::)|:[fF]{{4}}:[fF]{{4}}|::({h})?)(\\]|$)"
    );
    format!(
        "(0|22[4-9]|23[0-9])\\.|255\\.255\\.255\\.255(:|$)|\\[[0:]+\\]|[0:]+$|\\[?[fF]{{2}}[0-9a-fA-F]{{2}}:|{mapped}"
    )
}

/// `LegRequest.remote` (`#[schema(schema_with)]`): the pattern is assembled from its parts.
pub(super) fn remote() -> Schema {
    AnyOfBuilder::new()
        .item(string().pattern(Some(remote_pattern())))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "ip:port (exactly), ip (that host, any port), ip:lo-hi (a port range, its ends in \
             either order; IPv6 in brackets), or null to learn it from the first packet; a \
             unicast address (not multicast, broadcast, unspecified or 0.x.x.x, nor IPv4-mapped \
             onto one) and ports above 0",
        ))
        .build()
        .into()
}

/// `ResetBody.field`: tonegate-card's `capture::Field` (lowercase), which has no schema of its
/// own. `tests/gateway/openapi.rs` checks that each value reads as a `Field`.
pub(super) fn capture_field() -> Schema {
    one_of(&["pan", "expiry", "cvv", "postcode"])
}

/// `ConnectorPaymentResponse.type`: `apple_response` refuses any other (400).
pub(super) fn connector_payment_response() -> Schema {
    one_of(&["ConnectorPaymentResponse"])
}

/// `CreateBody.PaymentData`: the map `PaymentData::from_value` reads, or null.
pub(super) fn payment_data_field() -> Schema {
    AnyOfBuilder::new()
        .item(schema_ref("PaymentData"))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .build()
        .into()
}
