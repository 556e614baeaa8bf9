//! The `ApiInteraction` XML format (seed 002), parsed strictly: every element known, required
//! ones present, errors with line and column.
//!
//! ```xml
//! <ApiInteraction>
//!   <Request> <Url/> <Method/> <Headers><Header><Key/><Value/></Header>…</Headers> <Body/> </Request>
//!   <Response> <Type>JSON|XML|Text</Type> <ResponseCodeDestination/>
//!     <Fields><Field><Locator/><Destination/><DataType/></Field>…</Fields> </Response>
//! </ApiInteraction>
//! ```

use quick_xml::events::Event;
use quick_xml::Reader;
use thiserror::Error;

/// Largest definition accepted, bytes.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;

/// A definition that cannot be used, with where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}, column {column}: {message}")]
pub struct DefinitionError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// How the response body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    /// JSON: locators are dotted paths with `[i]` indexes.
    Json,
    /// XML: locators are element paths (`a/b/c` or `a.b.c`).
    Xml,
    /// Plain text: the locator `.` (or empty) takes the whole body.
    Text,
}

/// What a value is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// As text.
    String,
    /// A whole number.
    Integer,
    /// A decimal number.
    Decimal,
    /// `true`/`false`.
    Boolean,
    /// An ISO 8601 date (a date-time is cut to its date).
    Date,
}

/// One `Field`: where a value is found and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    /// Where in the response.
    pub locator: String,
    /// The variable it is stored in.
    pub destination: String,
    /// Conversion.
    pub data_type: DataType,
}

/// A parsed `ApiInteraction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interaction {
    /// URL template.
    pub url: String,
    /// HTTP method.
    pub method: String,
    /// Header templates, in order.
    pub headers: Vec<(String, String)>,
    /// Body template (may be empty).
    pub body: String,
    /// Response format.
    pub response_type: ResponseType,
    /// Variable that receives the HTTP status code.
    pub response_code_destination: Option<String>,
    /// Values to take from the response.
    pub fields: Vec<FieldMap>,
}

/// A generic element with its text and where it starts.
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
    at: usize,
}

fn position(src: &str, offset: usize) -> (usize, usize) {
    // The XML reader's offsets can land inside a character (it skips a byte-order mark
    // without counting it): step back to the character's start.
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn error(src: &str, at: usize, message: impl Into<String>) -> DefinitionError {
    let (line, column) = position(src, at);
    DefinitionError {
        line,
        column,
        message: message.into(),
    }
}

fn parse_tree(src: &str) -> Result<Element, DefinitionError> {
    let mut reader = Reader::from_str(src);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let at = reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(|e| {
            error(
                src,
                reader.error_position() as usize,
                format!("malformed XML: {e}"),
            )
        })?;
        match ev {
            Event::Start(e) => {
                if root.is_some() {
                    return Err(error(src, at, "content after the root element"));
                }
                stack.push(Element {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    text: String::new(),
                    children: Vec::new(),
                    at,
                });
                if stack.len() > 16 {
                    return Err(error(src, at, "elements nested too deeply"));
                }
            }
            Event::Empty(e) => {
                let el = Element {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    text: String::new(),
                    children: Vec::new(),
                    at,
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return Err(error(src, at, "content after the root element")),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| error(src, at, "closing tag without an opening one"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t
                    .unescape()
                    .map_err(|e| error(src, at, format!("bad text: {e}")))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(error(src, at, "text outside the root element")),
                }
            }
            Event::CData(c) => {
                let text = String::from_utf8(c.into_inner().into_owned())
                    .map_err(|_| error(src, at, "CDATA is not UTF-8"))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None => return Err(error(src, at, "CDATA outside the root element")),
                }
            }
            Event::Eof => break,
            Event::DocType(_) => return Err(error(src, at, "DOCTYPE is not allowed")),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(error(
            src,
            open.at,
            format!("<{}> is never closed", open.name),
        ));
    }
    root.ok_or_else(|| error(src, src.len(), "no ApiInteraction element"))
}

/// Checks an element's children: each must be one of `allowed`, none twice.
fn children<'a>(
    src: &str,
    el: &'a Element,
    allowed: &[&str],
) -> Result<Vec<(&'a str, &'a Element)>, DefinitionError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for c in &el.children {
        if !allowed.contains(&c.name.as_str()) {
            return Err(error(
                src,
                c.at,
                format!(
                    "unknown element <{}> in <{}> (expected one of: {})",
                    c.name,
                    el.name,
                    allowed.join(", ")
                ),
            ));
        }
        if seen.contains(&c.name.as_str()) {
            return Err(error(
                src,
                c.at,
                format!("<{}> appears twice in <{}>", c.name, el.name),
            ));
        }
        seen.push(&c.name);
        out.push((c.name.as_str(), c));
    }
    Ok(out)
}

fn required<'a>(
    src: &str,
    parent: &Element,
    found: &[(&str, &'a Element)],
    name: &str,
) -> Result<&'a Element, DefinitionError> {
    found
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, e)| *e)
        .ok_or_else(|| {
            error(
                src,
                parent.at,
                format!("<{}> is missing <{name}>", parent.name),
            )
        })
}

fn optional<'a>(found: &[(&str, &'a Element)], name: &str) -> Option<&'a Element> {
    found.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
}

fn leaf(src: &str, el: &Element) -> Result<String, DefinitionError> {
    if let Some(c) = el.children.first() {
        return Err(error(
            src,
            c.at,
            format!("<{}> may hold only text, found <{}>", el.name, c.name),
        ));
    }
    Ok(el.text.clone())
}

impl Interaction {
    /// Parses a definition.
    pub fn parse(src: &str) -> Result<Interaction, DefinitionError> {
        if src.len() > MAX_DEFINITION_BYTES {
            return Err(error(
                src,
                0,
                format!("definition larger than {MAX_DEFINITION_BYTES} bytes"),
            ));
        }
        let root = parse_tree(src)?;
        if root.name != "ApiInteraction" {
            return Err(error(
                src,
                root.at,
                format!(
                    "root element must be <ApiInteraction>, found <{}>",
                    root.name
                ),
            ));
        }
        let top = children(src, &root, &["Request", "Response"])?;
        let req = required(src, &root, &top, "Request")?;

        let r = children(src, req, &["Url", "Method", "Headers", "Body"])?;
        let url = leaf(src, required(src, req, &r, "Url")?)?
            .trim()
            .to_string();
        if url.is_empty() {
            return Err(error(src, req.at, "<Url> is empty"));
        }
        let method_el = required(src, req, &r, "Method")?;
        let method = leaf(src, method_el)?.trim().to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&method.as_str()) {
            return Err(error(
                src,
                method_el.at,
                format!("unsupported <Method> {method:?}"),
            ));
        }
        let mut headers = Vec::new();
        if let Some(hs) = optional(&r, "Headers") {
            for h in &hs.children {
                if h.name != "Header" {
                    return Err(error(
                        src,
                        h.at,
                        format!(
                            "unknown element <{}> in <Headers> (expected Header)",
                            h.name
                        ),
                    ));
                }
                let kv = children(src, h, &["Key", "Value"])?;
                let key = leaf(src, required(src, h, &kv, "Key")?)?.trim().to_string();
                if key.is_empty() {
                    return Err(error(src, h.at, "<Header> has an empty <Key>"));
                }
                let value = leaf(src, required(src, h, &kv, "Value")?)?
                    .trim()
                    .to_string();
                headers.push((key, value));
            }
            if !hs.text.trim().is_empty() {
                return Err(error(
                    src,
                    hs.at,
                    "<Headers> may hold only <Header> elements",
                ));
            }
        }
        let body = match optional(&r, "Body") {
            Some(b) => {
                let t = leaf(src, b)?;
                if t.trim().is_empty() {
                    String::new()
                } else {
                    t.trim().to_string()
                }
            }
            None => String::new(),
        };

        let resp = required(src, &root, &top, "Response")?;
        let p = children(src, resp, &["Type", "ResponseCodeDestination", "Fields"])?;
        let type_el = required(src, resp, &p, "Type")?;
        let response_type = match leaf(src, type_el)?.trim().to_ascii_uppercase().as_str() {
            "JSON" => ResponseType::Json,
            "XML" => ResponseType::Xml,
            "TEXT" => ResponseType::Text,
            other => {
                return Err(error(
                    src,
                    type_el.at,
                    format!("unknown <Type> {other:?} (JSON, XML or Text)"),
                ))
            }
        };
        let response_code_destination = optional(&p, "ResponseCodeDestination")
            .map(|e| leaf(src, e))
            .transpose()?
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let mut fields = Vec::new();
        if let Some(fs) = optional(&p, "Fields") {
            for f in &fs.children {
                if f.name != "Field" {
                    return Err(error(
                        src,
                        f.at,
                        format!("unknown element <{}> in <Fields> (expected Field)", f.name),
                    ));
                }
                let c = children(src, f, &["Locator", "Destination", "DataType"])?;
                let locator = leaf(src, required(src, f, &c, "Locator")?)?
                    .trim()
                    .to_string();
                let destination = leaf(src, required(src, f, &c, "Destination")?)?
                    .trim()
                    .to_string();
                if destination.is_empty() {
                    return Err(error(src, f.at, "<Field> has an empty <Destination>"));
                }
                let dt_el = optional(&c, "DataType");
                let data_type = match dt_el.map(|e| leaf(src, e)).transpose()?.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
                    None | Some("string") | Some("") => DataType::String,
                    Some("integer") | Some("int") => DataType::Integer,
                    Some("decimal") | Some("number") => DataType::Decimal,
                    Some("boolean") | Some("bool") => DataType::Boolean,
                    Some("date") => DataType::Date,
                    Some(other) => {
                        return Err(error(src, dt_el.map_or(f.at, |e| e.at), format!("unknown <DataType> {other:?} (String, Integer, Decimal, Boolean, Date)")))
                    }
                };
                fields.push(FieldMap {
                    locator,
                    destination,
                    data_type,
                });
            }
        }
        Ok(Interaction {
            url,
            method,
            headers,
            body,
            response_type,
            response_code_destination,
            fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_line_and_column() {
        let e = Interaction::parse("<ApiInteraction>\n  <Request>\n    <Url>x</Url>\n    <Bogus/>\n  </Request>\n</ApiInteraction>").unwrap_err();
        assert_eq!((e.line, e.column), (4, 5), "{e}");
        assert!(e.message.contains("unknown element <Bogus>"), "{e}");
        let e = Interaction::parse(
            "<ApiInteraction><Request><Url>u</Url><Method>GET</Method></Request></ApiInteraction>",
        )
        .unwrap_err();
        assert!(e.message.contains("missing <Response>"), "{e}");
        let e = Interaction::parse("<ApiInteraction><Request><Url>u</Url></Request><Response><Type>JSON</Type></Response></ApiInteraction>").unwrap_err();
        assert!(e.message.contains("missing <Method>"), "{e}");
        let e = Interaction::parse("<ApiInteraction>\n<Request>").unwrap_err();
        assert!(
            e.message.contains("never closed") || e.message.contains("malformed"),
            "{e}"
        );
        assert!(Interaction::parse("not xml at all").is_err());
        assert!(Interaction::parse("").is_err());
    }

    #[test]
    fn a_byte_order_mark_before_bad_xml_is_an_error_not_a_panic() {
        // Found by the property test: offsets after a BOM fell inside a 4-byte character.
        for src in [
            "\u{feff}<x>\u{2a0b7}\u{2a0b7}<",
            "\u{feff}<\u{23a}\\w\u{78c61}N\"\"<x\u{1f574}</y>\u{2a0b7}",
            "\u{feff}<ApiInteraction><\u{2a0b7}",
        ] {
            let e = Interaction::parse(src).unwrap_err();
            assert!(e.line >= 1 && e.column >= 1, "{e}");
        }
    }
}
