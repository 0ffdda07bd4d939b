//! One parser for the bodies GMS clients send: `application/x-www-form-urlencoded` (the
//! documented examples, Designer) and `application/json` (iOS, QA), into one flat map of
//! key → string (docs/gms.md#create).
//!
//! Strict, so a bad body changes nothing: malformed percent-escapes, text that is not UTF-8,
//! a key given twice, an empty key, the NUL character, JSON that is not one object, and nested
//! values (arrays, objects) are 400s naming the problem. JSON numbers and booleans become their
//! JSON text (`12`, `true`); `null` counts as absent. Without a content type (or `text/plain`)
//! the body is read as JSON when it starts with `{` or `[`, as a form otherwise.

use std::collections::BTreeMap;
use std::fmt;

use axum::http::{HeaderMap, header};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::error::GmsError;

/// The largest body of a `/genesys/` request, in bytes (413 above it).
pub const MAX_BODY: usize = 64 * 1024;
/// The most keys one body may carry.
pub const MAX_KEYS: usize = 256;

/// A parsed body: key → value, every value a string.
pub type Fields = BTreeMap<String, String>;

/// Parses a body by its content type (see the module doc).
pub fn parse(headers: &HeaderMap, bytes: &[u8]) -> Result<Fields, GmsError> {
    if bytes.len() > MAX_BODY {
        return Err(GmsError::new(
            413,
            format!("request body is over {MAX_BODY} bytes"),
        ));
    }
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let fields = match kind.as_deref() {
        Some("application/x-www-form-urlencoded") => form(bytes)?,
        Some(k) if k == "application/json" || k.ends_with("+json") => json(bytes)?,
        None | Some("" | "text/plain") => match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => json(bytes)?,
            _ => form(bytes)?,
        },
        Some(other) => {
            return Err(GmsError::new(
                415,
                format!(
                    "content type {other} is not accepted: send application/x-www-form-urlencoded \
                     or application/json"
                ),
            ));
        }
    };
    if fields.len() > MAX_KEYS {
        return Err(GmsError::bad_request(format!(
            "the body has {} keys; at most {MAX_KEYS} are accepted",
            fields.len()
        )));
    }
    Ok(fields)
}

/// A form-urlencoded body, decoded strictly.
pub fn form(bytes: &[u8]) -> Result<Fields, GmsError> {
    let mut fields = Fields::new();
    for pair in bytes.split(|b| *b == b'&') {
        if pair.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (key, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let key = decode(key)?;
        let value = decode(value)?;
        insert(&mut fields, key, value)?;
    }
    Ok(fields)
}

/// One percent-encoded component (`+` is a space) as UTF-8 text. Written here rather than
/// taken from `form_urlencoded`/`percent-encoding`: those pass a malformed escape through as
/// text and replace bad UTF-8, where a GMS body with either is refused.
fn decode(raw: &[u8]) -> Result<String, GmsError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        GmsError::bad_request(
                            "malformed form body: '%' must be followed by two hexadecimal digits",
                        )
                    })?;
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| GmsError::bad_request("malformed form body: the text is not UTF-8"))
}

/// Adds one key, refusing empty keys, repeats and the NUL character.
fn insert(fields: &mut Fields, key: String, value: String) -> Result<(), GmsError> {
    if key.trim().is_empty() {
        return Err(GmsError::bad_request("the body has an empty key"));
    }
    if key.contains('\0') || value.contains('\0') {
        return Err(GmsError::bad_request(
            "text may not contain the NUL character; remove it and retry",
        ));
    }
    if fields.contains_key(&key) {
        return Err(GmsError::bad_request(format!(
            "key {} is given more than once; send each key once",
            shown(&key)
        )));
    }
    fields.insert(key, value);
    Ok(())
}

/// A key as quoted in a message (cut, so a huge key does not make a huge answer).
fn shown(key: &str) -> String {
    let cut: String = key.chars().take(64).collect();
    if cut.len() < key.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// A JSON body: one object of scalar values.
pub fn json(bytes: &[u8]) -> Result<Fields, GmsError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fields = (&mut de).deserialize_any(FlatVisitor).map_err(|e| {
        if e.is_data() {
            GmsError::bad_request(
                e.to_string()
                    .split(" at line ")
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
        } else {
            GmsError::bad_request(format!("malformed JSON body: {e}"))
        }
    })?;
    de.end()
        .map_err(|e| GmsError::bad_request(format!("malformed JSON body: {e}")))?;
    Ok(fields)
}

/// Reads one JSON object into [`Fields`], refusing repeats and nested values.
struct FlatVisitor;

impl<'de> Visitor<'de> for FlatVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the body to be one JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match map.next_value::<Value>()? {
                Value::Null => continue,
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(de::Error::custom(format!(
                        "the value of {} must be a string, number or boolean, not an array or \
                         object",
                        shown(&key)
                    )));
                }
            };
            if fields.len() >= MAX_KEYS {
                return Err(de::Error::custom(format!(
                    "the body has more than {MAX_KEYS} keys"
                )));
            }
            insert(&mut fields, key, value).map_err(|e| de::Error::custom(e.message))?;
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(kind: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, kind.parse().expect("header"));
        h
    }

    #[test]
    fn the_documented_form_example_parses() {
        let f = parse(
            &with("application/x-www-form-urlencoded; charset=UTF-8"),
            b"_customer_number=01822256&my_token=Stat_Server1",
        )
        .expect("form");
        assert_eq!(f["_customer_number"], "01822256");
        assert_eq!(f["my_token"], "Stat_Server1");
        let f = form(b"a=%C3%A9+x&b=&c").expect("form");
        assert_eq!(
            (f["a"].as_str(), f["b"].as_str(), f["c"].as_str()),
            ("é x", "", "")
        );
    }

    #[test]
    fn json_scalars_become_strings() {
        let f =
            json(br#"{"_customer_number": 5115, "ok": true, "x": null, "s": "v"}"#).expect("json");
        assert_eq!(f["_customer_number"], "5115");
        assert_eq!(f["ok"], "true");
        assert_eq!(f["s"], "v");
        assert!(!f.contains_key("x"));
    }

    #[test]
    fn bad_bodies_are_400_with_a_reason() {
        for bad in [
            &b"a=%zz"[..],
            b"a=%4",
            b"a=%FF",
            b"a=1&a=2",
            b"=v",
            b"a=%00",
        ] {
            let e = form(bad).expect_err("refused");
            assert_eq!(e.status, 400, "{bad:?}");
        }
        for bad in [
            &br#"[1]"#[..],
            br#"{"a":[1]}"#,
            br#"{"a":{"b":1}}"#,
            br#"{"a":1,"a":2}"#,
            br#"{"a":1"#,
            br#"{"a":1} x"#,
            br#""text""#,
            b"\xff",
        ] {
            let e = json(bad).expect_err("refused");
            assert_eq!(e.status, 400, "{bad:?}");
            assert!(!e.message.is_empty());
        }
        let e = parse(&with("multipart/form-data"), b"a=1").expect_err("415");
        assert_eq!(e.status, 415);
        let e = parse(&HeaderMap::new(), &vec![b'a'; MAX_BODY + 1]).expect_err("413");
        assert_eq!(e.status, 413);
    }

    #[test]
    fn without_a_content_type_the_body_is_sniffed() {
        let f = parse(&HeaderMap::new(), br#" {"a":"1"}"#).expect("json");
        assert_eq!(f["a"], "1");
        let f = parse(&with("text/plain"), b"a=1").expect("form");
        assert_eq!(f["a"], "1");
        assert!(parse(&HeaderMap::new(), b"").expect("empty").is_empty());
    }
}
