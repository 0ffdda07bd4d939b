//! `userData` filtering: only keys that are valid JavaScript identifiers are kept (GES rule);
//! the rest are dropped silently. Values are any JSON and are never logged.

use serde_json::{Map, Value};

/// ECMAScript reserved words, which are not valid variable names.
const RESERVED: &[&str] = &[
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "function",
    "if",
    "import",
    "in",
    "instanceof",
    "new",
    "null",
    "return",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
    "let",
    "static",
    "implements",
    "interface",
    "package",
    "private",
    "protected",
    "public",
    "await",
];

/// True when `key` is a valid JavaScript variable name (ASCII subset).
pub fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !RESERVED.contains(&key)
}

/// Keeps the identifier keys of a `userData` object.
pub fn filter(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter().filter(|(k, _)| is_identifier(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_identifiers_only() {
        for ok in ["a", "_x", "$y", "email", "camelCase9", "a_b$c"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a b", "é", "class", "null", "x.y"] {
            assert!(!is_identifier(bad), "{bad}");
        }
        let v: Map<String, Value> =
            serde_json::from_str(r#"{"ok":1,"not ok":2,"also-bad":3,"$fine":{"k":[1]}}"#).unwrap();
        let kept: Vec<_> = filter(v).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kept, vec!["$fine".to_string(), "ok".to_string()]);
    }
}
