//! The GWS statistics proxy's rules that know neither HTTP nor GWS's transport
//! (docs/statistics.md): the `cache-control: max-age` header, the canonical form and hash of
//! a request body (the cache key), and the EWT mode3 request and the reading of its answer.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Smallest `max-age` a caller may ask for, in seconds (GES's documented minimum).
pub const MIN_MAX_AGE_S: u64 = 15;

/// Stat Server object type of a virtual queue, asked for by EWT mode3.
pub const EWT_OBJECT_TYPE: &str = "Queue";

/// The `max-age` of a `cache-control` header: `None` when the header or the directive is
/// absent; 400 when it is not a whole number of seconds or is below [`MIN_MAX_AGE_S`]. Other
/// directives are ignored.
pub fn max_age(header: Option<&str>) -> Result<Option<u64>, Error> {
    let Some(header) = header else {
        return Ok(None);
    };
    for directive in header.split(',').map(str::trim) {
        let Some((name, value)) = directive.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("max-age") {
            continue;
        }
        let value = value.trim().trim_matches('"');
        let secs: u64 = value.parse().map_err(|_| {
            Error::invalid(format!(
                "cache-control: max-age must be a whole number of seconds (at least \
                 {MIN_MAX_AGE_S}), got {value:?}"
            ))
        })?;
        if secs < MIN_MAX_AGE_S {
            return Err(Error::invalid(format!(
                "cache-control: max-age must be at least {MIN_MAX_AGE_S} seconds, got {secs}"
            )));
        }
        return Ok(Some(secs));
    }
    Ok(None)
}

/// The body in a canonical text: object keys sorted at every level, no whitespace, so two
/// bodies that differ only in key order or spacing share one cache entry.
pub fn canonical(body: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // Sorted insertion keeps the order whether or not serde_json preserves insertion order.
    sorted(body).to_string()
}

/// Hex SHA-256 of the GWS statistics URL, the client id and the canonical body: the cache
/// key's tail (URL and client in it, so answers got with a tenant's former GWS or former
/// client are not served after an administrator changed them).
pub fn body_hash(statistics_url: &str, client_id: &str, body: &Value) -> String {
    let mut h = Sha256::new();
    h.update(statistics_url.as_bytes());
    h.update([0u8]);
    h.update(client_id.as_bytes());
    h.update([0u8]);
    h.update(canonical(body).as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The get-statistic-ex body EWT mode3 sends: the service's statistic on its virtual queue.
pub fn ewt_request(statistic: &str, service: &str) -> Value {
    json!({"data": {"statistics": [{
        "name": statistic,
        "objectId": service,
        "objectType": EWT_OBJECT_TYPE,
    }]}})
}

/// The estimate (whole seconds, ≥ 0) in a get-statistic-ex answer: the value of the entry
/// named `statistic` for `service` (or the only entry), read as a number, a numeric string or
/// an object with a numeric `value`. `None` when absent, negative or not a number.
pub fn ewt_value(answer: &Value, statistic: &str, service: &str) -> Option<i64> {
    let stats = answer.pointer("/data/statistics")?.as_array()?;
    let entry = stats
        .iter()
        .find(|s| {
            s.get("name").and_then(Value::as_str) == Some(statistic)
                && s.get("objectId")
                    .and_then(Value::as_str)
                    .is_none_or(|id| id == service)
        })
        .or_else(|| (stats.len() == 1).then(|| &stats[0]))?;
    let secs = number(entry.get("value")?)?;
    (0.0..1e12).contains(&secs).then(|| secs.round() as i64)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(map) => map.get("value").and_then(number),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_at_least_fifteen_whole_seconds() {
        assert_eq!(max_age(None).unwrap(), None);
        assert_eq!(max_age(Some("no-cache")).unwrap(), None);
        assert_eq!(max_age(Some("max-age=15")).unwrap(), Some(15));
        assert_eq!(max_age(Some("public, MAX-AGE = 20")).unwrap(), Some(20));
        assert_eq!(max_age(Some("max-age=\"30\"")).unwrap(), Some(30));
        for bad in [
            "max-age=5",
            "max-age=14",
            "max-age=-1",
            "max-age=1.5",
            "max-age=abc",
        ] {
            let e = max_age(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("max-age"), "{bad}: {e}");
        }
    }

    #[test]
    fn canonical_form_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[{"q":1,"p":2}],"x":2}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "a": {"x": 2, "y": [ {"p":2, "q":1} ]}, "b": 1 }"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":{"x":2,"y":[{"p":2,"q":1}]},"b":1}"#);
        assert_eq!(body_hash("u", "c", &a), body_hash("u", "c", &b));
        assert_ne!(body_hash("u", "c", &a), body_hash("v", "c", &a));
        assert_ne!(body_hash("u", "c", &a), body_hash("u", "d", &a));
        // Array order is meaning, not spacing.
        let c: Value = serde_json::from_str(r#"[1,2]"#).unwrap();
        let d: Value = serde_json::from_str(r#"[2,1]"#).unwrap();
        assert_ne!(body_hash("u", "c", &c), body_hash("u", "c", &d));
    }

    #[test]
    fn ewt_values_read_in_each_shape() {
        let answer = |value: Value| {
            json!({"data": {"statistics": [
                {"name": "Other", "objectId": "sales", "objectType": "Queue", "value": 1},
                {"name": "EWT", "objectId": "sales", "objectType": "Queue", "value": value}
            ]}})
        };
        assert_eq!(ewt_value(&answer(json!(42)), "EWT", "sales"), Some(42));
        assert_eq!(ewt_value(&answer(json!(41.6)), "EWT", "sales"), Some(42));
        assert_eq!(ewt_value(&answer(json!("17")), "EWT", "sales"), Some(17));
        assert_eq!(
            ewt_value(&answer(json!({"value": 9})), "EWT", "sales"),
            Some(9)
        );
        assert_eq!(ewt_value(&answer(json!(-1)), "EWT", "sales"), None);
        assert_eq!(ewt_value(&answer(json!(null)), "EWT", "sales"), None);
        assert_eq!(ewt_value(&answer(json!(5)), "Missing", "sales"), None);
        assert_eq!(ewt_value(&json!({"data": {}}), "EWT", "sales"), None);
        assert_eq!(
            ewt_request("EWT", "sales"),
            json!({"data": {"statistics": [
                {"name": "EWT", "objectId": "sales", "objectType": "Queue"}]}})
        );
    }
}
