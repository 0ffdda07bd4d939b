//! Fuzz target `gms_body`: a `/genesys/` create body (docs/fuzzing.md#gms_body). The first
//! byte picks the content type (form, JSON, none, `text/plain`), the rest is the body; it runs
//! the surface's one body parser (`gms::body::parse`), the translation onto the v3 create
//! (`gms::create::translate`) and the create's field rules (`validate`).
//!
//! Asserts beyond "no panic": a refusal is a 4xx; a parsed body has at most `MAX_KEYS` keys,
//! none empty, no NUL anywhere; a translated create carries the trimmed, non-empty
//! `_customer_number` as its number and no ignored GMS control key in its user data.
#![no_main]

use axum::http::{HeaderMap, HeaderValue, header};
use functions::gms::{body, create};
use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 4] = [
    Some("application/x-www-form-urlencoded"),
    Some("application/json; charset=utf-8"),
    None,
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Some(t) = TYPES[usize::from(pick) % TYPES.len()] {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
    }
    let fields = match body::parse(&headers, bytes) {
        Ok(f) => f,
        Err(e) => return assert!((400..500).contains(&e.status), "{}", e.status),
    };
    assert!(fields.len() <= body::MAX_KEYS);
    for (k, v) in &fields {
        assert!(!k.is_empty(), "empty key");
        assert!(!k.contains('\0') && !v.contains('\0'), "NUL kept");
    }
    let number = fields.get("_customer_number").cloned();
    let (parms, _immediate) = match create::translate("svc", fields) {
        Ok(t) => t,
        Err(e) => return assert!((400..500).contains(&e.status), "{}", e.status),
    };
    let given = number.expect("translated without _customer_number");
    assert!(!given.trim().is_empty());
    assert_eq!(parms.phone_number.as_deref(), Some(given.as_str()));
    if let Some(serde_json::Value::Object(user)) = &parms.user_data {
        for key in create::IGNORED {
            assert!(
                !user.contains_key(key),
                "ignored key {key} kept as user data"
            );
        }
    }
    let _ = parms.validate();
});
