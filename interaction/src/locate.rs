//! Finding a `Field`'s value in a response and converting it to its `DataType`.

use serde_json::Value;

use super::definition::DataType;

/// A JSON value by dotted path with array indexes: `sessionId`, `a.b[0].c`, `items[2]`.
pub fn json_path<'a>(root: &'a Value, locator: &str) -> Option<&'a Value> {
    let mut cur = root;
    for part in locator.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        let mut idx = indexes;
        while let Some(rest) = idx.strip_prefix('[') {
            let close = rest.find(']')?;
            let n: usize = rest[..close].trim().parse().ok()?;
            cur = cur.get(n)?;
            idx = &rest[close + 1..];
        }
    }
    Some(cur)
}

/// An XML element's text by element path (`a/b/c` or `a.b.c`; the root's name may be left
/// out; `[i]` picks among same-named siblings).
pub fn xml_path(body: &str, locator: &str) -> Result<Option<String>, String> {
    let doc = roxml(body)?;
    let parts: Vec<&str> = locator
        .split(['/', '.'])
        .filter(|p| !p.is_empty())
        .collect();
    let from_root = parts.first().is_some_and(|p| strip_index(p).0 == doc.name);
    let mut cur = &doc;
    for part in parts.iter().skip(usize::from(from_root)) {
        let (name, n) = strip_index(part);
        cur = match cur.children.iter().filter(|c| c.name == name).nth(n) {
            Some(c) => c,
            None => return Ok(None),
        };
    }
    Ok(Some(cur.text.trim().to_string()))
}

fn strip_index(part: &str) -> (&str, usize) {
    match part.find('[') {
        Some(i) => (
            &part[..i],
            part[i + 1..].trim_end_matches(']').parse().unwrap_or(0),
        ),
        None => (part, 0),
    }
}

struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

/// A small XML reader for responses (quick-xml), elements and text only.
fn roxml(body: &str) -> Result<Node, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut stack: Vec<Node> = Vec::new();
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("response is not XML: {e}"))?
        {
            Event::Start(e) => stack.push(Node {
                name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                text: String::new(),
                children: Vec::new(),
            }),
            Event::Empty(e) => {
                let n = Node {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    text: String::new(),
                    children: Vec::new(),
                };
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None => return Ok(n),
                }
            }
            Event::End(_) => {
                let n = stack.pop().ok_or("response XML is unbalanced")?;
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None => return Ok(n),
                }
            }
            Event::Text(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&t.unescape().map_err(|e| e.to_string())?);
                }
            }
            Event::CData(c) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::Eof => return Err("response XML has no root element".into()),
            _ => {}
        }
    }
}

/// Converts a found value to `dt`; the error says what was found.
pub fn convert(v: &Value, dt: DataType) -> Result<Value, String> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match dt {
        DataType::String => Ok(Value::String(match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })),
        DataType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
            _ => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{text:?} is not an Integer")),
        },
        DataType::Decimal => match v {
            Value::Number(_) => Ok(v.clone()),
            _ => text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("{text:?} is not a Decimal")),
        },
        DataType::Boolean => match v {
            Value::Bool(_) => Ok(v.clone()),
            _ => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Value::Bool(true)),
                "false" | "0" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("{text:?} is not a Boolean")),
            },
        },
        DataType::Date => {
            let d = text.get(..10).unwrap_or("");
            let ok = d.len() == 10
                && d.as_bytes()[4] == b'-'
                && d.as_bytes()[7] == b'-'
                && d[..4].parse::<u16>().is_ok()
                && d[5..7].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
                && d[8..10].parse::<u8>().is_ok_and(|x| (1..=31).contains(&x))
                && (text.len() == 10 || matches!(text.as_bytes()[10], b'T' | b' '));
            if ok {
                Ok(Value::String(d.to_string()))
            } else {
                Err(format!("{text:?} is not a Date (YYYY-MM-DD)"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_paths() {
        let v = json!({"a": {"b": [{"c": 1}, {"c": "two"}]}, "top": true, "list": [10, 20]});
        assert_eq!(json_path(&v, "a.b[1].c"), Some(&json!("two")));
        assert_eq!(json_path(&v, "list[1]"), Some(&json!(20)));
        assert_eq!(json_path(&v, "top"), Some(&json!(true)));
        assert_eq!(json_path(&v, "a.b[5].c"), None);
        assert_eq!(json_path(&v, "a.x"), None);
    }

    #[test]
    fn xml_paths() {
        let b = "<r><session><id>s-1</id><state>Completed</state></session><n>1</n><n>2</n></r>";
        assert_eq!(xml_path(b, "session/id").unwrap().as_deref(), Some("s-1"));
        assert_eq!(
            xml_path(b, "r.session.state").unwrap().as_deref(),
            Some("Completed")
        );
        assert_eq!(xml_path(b, "n[1]").unwrap().as_deref(), Some("2"));
        assert_eq!(xml_path(b, "session/nope").unwrap(), None);
        assert!(xml_path("{}", "a").is_err());
    }

    #[test]
    fn conversions() {
        assert_eq!(convert(&json!("42"), DataType::Integer), Ok(json!(42)));
        assert!(convert(&json!("4.2"), DataType::Integer)
            .unwrap_err()
            .contains("not an Integer"));
        assert_eq!(convert(&json!("4.25"), DataType::Decimal), Ok(json!(4.25)));
        assert_eq!(convert(&json!("TRUE"), DataType::Boolean), Ok(json!(true)));
        assert!(convert(&json!("maybe"), DataType::Boolean).is_err());
        assert_eq!(
            convert(&json!("2026-11-22T10:00:00Z"), DataType::Date),
            Ok(json!("2026-11-22"))
        );
        assert!(convert(&json!("22/11/2026"), DataType::Date).is_err());
        assert_eq!(convert(&json!(200), DataType::String), Ok(json!("200")));
    }
}
