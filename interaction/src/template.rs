//! `$(Name)` substitution, escaped for where the value lands.
//!
//! - URL: a variable at the very start is a base URL and goes in as it is (it must be http or
//!   https); anywhere else it is percent-encoded, so a value cannot add path segments or query
//!   parameters.
//! - Header value: as it is, but a value with CR or LF is refused (header injection).
//! - Body: JSON-string-escaped in a JSON body, form-encoded in a form body, as it is otherwise.
//!
//! A missing variable is an error naming it, never an empty string.

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::InteractionError;

/// Where a template is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The request URL.
    Url,
    /// A header value.
    Header,
    /// A JSON body.
    JsonBody,
    /// An `application/x-www-form-urlencoded` body.
    FormBody,
    /// Any other body.
    RawBody,
}

/// Everything but RFC 3986 unreserved characters is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A variable's text for substitution.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Substitutes every `$(Name)` in `template` from `vars`, escaping for `ctx`.
pub fn render(
    template: &str,
    vars: &BTreeMap<String, Value>,
    ctx: Context,
) -> Result<String, InteractionError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find(')').ok_or_else(|| {
            InteractionError::Template(format!(
                "unterminated $( in {:?}",
                &rest[i..rest.len().min(i + 40)]
            ))
        })?;
        let name = &after[..end];
        let value = vars
            .get(name)
            .ok_or_else(|| InteractionError::MissingVariable(name.to_string()))?;
        let text = text_of(value);
        let at_start = out.is_empty();
        match ctx {
            Context::Url
                if at_start && (text.starts_with("http://") || text.starts_with("https://")) =>
            {
                out.push_str(text.trim_end_matches('/'))
            }
            Context::Url => out.extend(utf8_percent_encode(&text, COMPONENT)),
            Context::Header => {
                if text.contains('\r') || text.contains('\n') {
                    return Err(InteractionError::Template(format!(
                        "variable {name} holds a line break and cannot go into a header"
                    )));
                }
                out.push_str(&text);
            }
            Context::JsonBody => {
                let quoted = serde_json::to_string(&text).expect("strings serialise");
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
            Context::FormBody => out
                .push_str(&serde_urlencoded::to_string([("", &text)]).expect("form encodes")[1..]),
            Context::RawBody => out.push_str(&text),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> BTreeMap<String, Value> {
        [
            ("Base".to_string(), json!("http://127.0.0.1:8080/")),
            ("GlobalPCI|SessionId".to_string(), json!("a b/../c?d")),
            ("Q".to_string(), json!("he said \"hi\"\n")),
            ("Amount".to_string(), json!(12.5)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn escapes_for_each_place() {
        let v = vars();
        assert_eq!(
            render(
                "$(Base)/globalpci/v1/session/$(GlobalPCI|SessionId)",
                &v,
                Context::Url
            )
            .unwrap(),
            "http://127.0.0.1:8080/globalpci/v1/session/a%20b%2F..%2Fc%3Fd"
        );
        assert_eq!(
            render(r#"{"x":"$(Q)","n":"$(Amount)"}"#, &v, Context::JsonBody).unwrap(),
            r#"{"x":"he said \"hi\"\n","n":"12.5"}"#
        );
        let body: Value =
            serde_json::from_str(&render(r#"{"x":"$(Q)"}"#, &v, Context::JsonBody).unwrap())
                .unwrap();
        assert_eq!(body["x"], "he said \"hi\"\n");
        assert_eq!(
            render("a=$(Q)&b=1", &v, Context::FormBody).unwrap(),
            "a=he+said+%22hi%22%0A&b=1"
        );
        assert!(matches!(
            render("Bearer $(Q)", &v, Context::Header),
            Err(InteractionError::Template(_))
        ));
        assert_eq!(
            render("Bearer $(Amount)", &v, Context::Header).unwrap(),
            "Bearer 12.5"
        );
    }

    #[test]
    fn missing_and_malformed() {
        let v = vars();
        assert!(
            matches!(render("x $(Nope) y", &v, Context::RawBody), Err(InteractionError::MissingVariable(n)) if n == "Nope")
        );
        assert!(matches!(
            render("x $(Open", &v, Context::RawBody),
            Err(InteractionError::Template(_))
        ));
        assert_eq!(
            render("no vars $ ( )", &v, Context::RawBody).unwrap(),
            "no vars $ ( )"
        );
    }
}
