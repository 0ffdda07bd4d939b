//! Click-To-Call-In values (docs/call-in.md): a group's spec as the admin API stores it, and the
//! public create request (`CallInRequestsParms` of the published clients) validated into a
//! [`NewCallIn`]. Numbers are normalised to E.164 (`+` and digits) with `shared::phone`, so the
//! pool, a request and the voice platform's match compare the same text.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::user_data;
use crate::{error::Error, phone};

/// Fewest digits of an access code.
pub const MIN_CODE_LENGTH: u8 = 4;
/// Most digits of an access code (8 digits still fit PostgreSQL's `integer`).
pub const MAX_CODE_LENGTH: u8 = 8;
/// Lifetime of a request when the group does not say, seconds.
pub const DEFAULT_LIFETIME_S: u32 = 300;
/// Longest lifetime of a request, seconds (a day).
pub const MAX_LIFETIME_S: u32 = 86_400;
/// Most inbound numbers in one group.
pub const MAX_NUMBERS: usize = 1_000;
/// Largest `userData` of a request, bytes of JSON.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

fn default_code_length() -> u8 {
    MIN_CODE_LENGTH
}

fn default_lifetime() -> u32 {
    DEFAULT_LIFETIME_S
}

/// A Click-To-Call-In group as stored (canonical: numbers normalised, sorted, unique).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The inbound numbers customers dial (E.164 with `+`).
    pub numbers: Vec<String>,
    /// Whether each request gets an access code to key in.
    #[serde(default)]
    pub access_codes: bool,
    /// Digits of an access code (4–8; codes never start with 0, the clients read them as a
    /// number).
    #[serde(default = "default_code_length")]
    pub code_length: u8,
    /// How long a request can be matched, seconds (1–86400).
    #[serde(default = "default_lifetime")]
    pub lifetime_seconds: u32,
}

impl GroupSpec {
    /// Checks and normalises a spec read from an admin body.
    pub fn normalised(mut self) -> Result<Self, Error> {
        if self.numbers.is_empty() || self.numbers.len() > MAX_NUMBERS {
            return Err(Error::invalid(format!(
                "numbers: a group needs 1 to {MAX_NUMBERS} inbound numbers"
            )));
        }
        let mut numbers = Vec::with_capacity(self.numbers.len());
        for (i, n) in self.numbers.iter().enumerate() {
            let e164 = e164(n)
                .ok_or_else(|| Error::invalid(format!("numbers[{i}]: not a valid phone number")))?;
            numbers.push(e164);
        }
        numbers.sort();
        let before = numbers.len();
        numbers.dedup();
        if numbers.len() != before {
            return Err(Error::invalid("numbers: a number is listed twice"));
        }
        self.numbers = numbers;
        if !(MIN_CODE_LENGTH..=MAX_CODE_LENGTH).contains(&self.code_length) {
            return Err(Error::invalid(format!(
                "code_length must be {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH} digits"
            )));
        }
        if !(1..=MAX_LIFETIME_S).contains(&self.lifetime_seconds) {
            return Err(Error::invalid(format!(
                "lifetime_seconds must be 1 to {MAX_LIFETIME_S}"
            )));
        }
        Ok(self)
    }

    /// The range access codes are drawn from, when the group issues them.
    pub fn code_range(&self) -> Option<std::ops::RangeInclusive<i32>> {
        self.access_codes.then(|| {
            let low = 10_i32.pow(u32::from(self.code_length) - 1);
            low..=low * 10 - 1
        })
    }
}

/// A number in E.164 with its `+`, or `None` when it is not a valid number (national numbers
/// are read as US, `shared::phone`).
pub fn e164(number: &str) -> Option<String> {
    let checked = phone::check(number, None).ok()?;
    checked.e164.map(|d| format!("+{d}"))
}

/// `CallInRequestsParms` as sent: every field optional here, so a missing one gets our message.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallInRequestsParms {
    /// The group to take a number from (required).
    #[serde(default)]
    pub group_name: Option<String>,
    /// The number the customer will call from.
    #[serde(default)]
    pub from_phone_number: Option<String>,
    /// Data handed to the voice platform with the match.
    #[serde(default)]
    pub user_data: Option<Value>,
    /// An existing callback of the tenant to link.
    #[serde(default)]
    pub callback_service_id: Option<String>,
}

/// A validated create request.
#[derive(Debug, Clone)]
pub struct NewCallIn {
    /// The group's name.
    pub group_name: String,
    /// The caller's number, E.164.
    pub from_number: Option<String>,
    /// Identifier keys only; `None` when empty.
    pub user_data: Option<Map<String, Value>>,
    /// The linked callback.
    pub callback_id: Option<Uuid>,
}

impl CallInRequestsParms {
    /// Validates the request (no database).
    pub fn validate(self) -> Result<NewCallIn, Error> {
        let group_name = self
            .group_name
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .ok_or_else(|| Error::invalid("groupName is required"))?;
        if !super::valid_name(&group_name) {
            return Err(Error::invalid(
                "groupName must be 1-255 printable characters without '/'",
            ));
        }
        let from_number = match self.from_phone_number.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(n) => Some(
                e164(n)
                    .ok_or_else(|| Error::invalid("fromPhoneNumber is not a valid phone number"))?,
            ),
        };
        let callback_id = match self.callback_service_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id) => Some(Uuid::parse_str(id).map_err(|_| {
                Error::invalid("callbackServiceId must be the id of one of your callbacks")
            })?),
        };
        Ok(NewCallIn {
            group_name,
            from_number,
            user_data: checked_user_data(self.user_data)?,
            callback_id,
        })
    }
}

fn checked_user_data(v: Option<Value>) -> Result<Option<Map<String, Value>>, Error> {
    let map = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => user_data::filter(map),
        Some(_) => return Err(Error::invalid("userData must be a JSON object")),
    };
    let size = serde_json::to_vec(&map).map_or(usize::MAX, |b| b.len());
    if size > MAX_USER_DATA_BYTES {
        return Err(Error::invalid(format!(
            "userData is too large: at most {MAX_USER_DATA_BYTES} bytes of JSON"
        )));
    }
    Ok(Some(map).filter(|m| !m.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<GroupSpec, Error> {
        serde_json::from_value::<GroupSpec>(v).unwrap().normalised()
    }

    #[test]
    fn group_numbers_are_normalised_sorted_and_unique() {
        let s = spec(json!({"numbers": ["+1 650 555 0102", "(650) 555-0101"]})).unwrap();
        assert_eq!(s.numbers, ["+16505550101", "+16505550102"]);
        assert_eq!(s.lifetime_seconds, DEFAULT_LIFETIME_S);
        assert!(s.code_range().is_none());
        assert!(spec(json!({"numbers": ["6505550101", "+16505550101"]})).is_err());
        assert!(spec(json!({"numbers": []})).is_err());
        assert!(spec(json!({"numbers": ["123"]})).is_err());
    }

    #[test]
    fn codes_have_their_length_and_no_leading_zero() {
        let s = spec(json!({"numbers": ["+16505550101"], "access_codes": true, "code_length": 6}))
            .unwrap();
        assert_eq!(s.code_range(), Some(100_000..=999_999));
        for bad in [3, 9] {
            let v = json!({"numbers": ["+16505550101"], "access_codes": true, "code_length": bad});
            assert!(spec(v).is_err(), "{bad}");
        }
        assert!(spec(json!({"numbers": ["+16505550101"], "lifetime_seconds": 0})).is_err());
    }

    #[test]
    fn requests_need_a_group_and_valid_fields() {
        let ok = |v: Value| {
            serde_json::from_value::<CallInRequestsParms>(v)
                .unwrap()
                .validate()
        };
        assert!(ok(json!({})).is_err());
        assert!(ok(json!({"groupName": "  "})).is_err());
        assert!(ok(json!({"groupName": "g", "fromPhoneNumber": "12"})).is_err());
        assert!(ok(json!({"groupName": "g", "userData": [1]})).is_err());
        assert!(ok(json!({"groupName": "g", "callbackServiceId": "x"})).is_err());
        let big = "x".repeat(MAX_USER_DATA_BYTES);
        assert!(ok(json!({"groupName": "g", "userData": {"a": big}})).is_err());
        let r = ok(json!({"groupName": "g", "fromPhoneNumber": "650 555 0101",
            "userData": {"ok": 1, "bad key": 2}}))
        .unwrap();
        assert_eq!(r.from_number.as_deref(), Some("+16505550101"));
        assert_eq!(r.user_data.unwrap().len(), 1);
    }
}
