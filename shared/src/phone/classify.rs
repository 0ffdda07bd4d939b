//! A number's region and type, as phonenumber 0.3.10 works them out (`validator::source_for`
//! and `validator::number_type`), with each pattern compiled once per thread instead of looked
//! up in the crate's one process-wide regex cache: that cache takes a global mutex, hashes
//! the whole pattern text twice and reorders its LRU list for every pattern tried, and a US
//! number tries about eleven patterns twice (the region search classifies it, then the type
//! is classified again). It was a sixth of the API's CPU per create (docs/costs.md). Same
//! patterns, same options (`ignore_whitespace`), same matching rule, same order: the
//! `agrees_with_phonenumber` tests compare the two on every region's examples.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use phonenumber::{
    PhoneNumber, Type,
    metadata::{DATABASE, Descriptor, Metadata},
};
use regex::Regex;
use regex_cache::CachedRegex;

thread_local! {
    /// Compiled patterns by the address of their (static) source in the metadata.
    static COMPILED: RefCell<HashMap<usize, Rc<Regex>>> = RefCell::new(HashMap::new());
}

/// Most patterns a thread keeps compiled (about 80 regions' worth; a US number needs 12).
/// Past it the thread starts again from none, so numbers from every region at once cost
/// compiles, as phonenumber's 100-entry LRU does, but never unbounded memory.
const MOST_COMPILED: usize = 1_024;

/// `pattern` compiled as phonenumber's metadata compiles it (`None` if it does not compile,
/// which phonenumber's own lookup would report as no match too).
fn compiled(pattern: &'static CachedRegex) -> Option<Rc<Regex>> {
    let key = std::ptr::from_ref(pattern) as usize;
    if let Some(re) = COMPILED.with_borrow(|c| c.get(&key).cloned()) {
        return Some(re);
    }
    let re = Rc::new(
        regex::RegexBuilder::new(pattern.as_str())
            .ignore_whitespace(true)
            .build()
            .ok()?,
    );
    COMPILED.with_borrow_mut(|c| {
        if c.len() >= MOST_COMPILED {
            c.clear();
        }
        c.insert(key, re.clone())
    });
    Some(re)
}

/// Whether `pattern` matches at the start of `value` (phonenumber's rule: leftmost match
/// starting at 0).
fn starts(pattern: &'static CachedRegex, value: &str) -> bool {
    compiled(pattern).is_some_and(|re| re.find(value).is_some_and(|m| m.start() == 0))
}

/// `Descriptor::is_match`: a possible length, then the national number pattern.
fn is_match(d: &'static Descriptor, value: &str) -> bool {
    let lengths = d.possible_length();
    if !lengths.is_empty() && !u16::try_from(value.len()).is_ok_and(|l| lengths.contains(&l)) {
        return false;
    }
    starts(d.national_number(), value)
}

fn matches(d: Option<&'static Descriptor>, value: &str) -> bool {
    d.is_some_and(|d| is_match(d, value))
}

/// `validator::number_type`: the first type whose pattern matches, in phonenumber's order.
fn number_type(meta: &'static Metadata, value: &str) -> Type {
    let d = meta.descriptors();
    if !is_match(d.general(), value) {
        return Type::Unknown;
    }
    let ordered = [
        (d.premium_rate(), Type::PremiumRate),
        (d.toll_free(), Type::TollFree),
        (d.shared_cost(), Type::SharedCost),
        (d.voip(), Type::Voip),
        (d.personal_number(), Type::PersonalNumber),
        (d.pager(), Type::Pager),
        (d.uan(), Type::Uan),
        (d.voicemail(), Type::Voicemail),
    ];
    if let Some((_, kind)) = ordered.into_iter().find(|(d, _)| matches(*d, value)) {
        return kind;
    }
    if matches(d.fixed_line(), value) {
        let same = d.fixed_line().map(|f| f.national_number().as_str())
            == d.mobile().map(|m| m.national_number().as_str());
        return if same || matches(d.mobile(), value) {
            Type::FixedLineOrMobile
        } else {
            Type::FixedLine
        };
    }
    if matches(d.mobile(), value) {
        return Type::Mobile;
    }
    Type::Unknown
}

/// The region metadata of `n` (`PhoneNumber::metadata`) with its type
/// (`PhoneNumber::number_type`): each classified once.
pub(super) fn region_and_type(n: &PhoneNumber) -> (Option<&'static Metadata>, Type) {
    let db = &*DATABASE;
    let code = n.country().code();
    let national = n.national().value().to_string();
    let (meta, kind) = match db.region(&code).as_deref() {
        None => (None, None),
        Some(["001"]) => (db.by_code(&code).and_then(|m| m.into_iter().next()), None),
        Some([only]) => (by_region(only), None),
        Some(regions) => search(regions, &national),
    };
    let kind = kind.unwrap_or_else(|| meta.map_or(Type::Unknown, |m| number_type(m, &national)));
    (meta, kind)
}

/// A region's metadata by its id, if the id names a country (as phonenumber parses it).
fn by_region(region: &str) -> Option<&'static Metadata> {
    region.parse::<phonenumber::country::Id>().ok()?;
    DATABASE.by_id(region)
}

/// `validator::source_for` over a code's regions: the first whose leading digits start the
/// national number, or, for a region without them, that classifies it (then with its type).
fn search(regions: &[&str], national: &str) -> (Option<&'static Metadata>, Option<Type>) {
    for region in regions {
        let Some(meta) = DATABASE.by_id(*region) else {
            continue;
        };
        if let Some(pattern) = meta.leading_digits() {
            if starts(pattern, national) {
                return (by_region(region), None);
            }
        } else {
            let kind = number_type(meta, national);
            if kind != Type::Unknown {
                return (by_region(region), Some(kind));
            }
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Both classifications of `n`, which must agree.
    fn agree(n: &PhoneNumber) {
        let (meta, kind) = region_and_type(n);
        assert_eq!(kind, n.number_type(&DATABASE), "type of {n:?}");
        assert_eq!(
            meta.map(std::ptr::from_ref),
            n.metadata(&DATABASE).map(std::ptr::from_ref),
            "region of {n:?}"
        );
    }

    const TYPES: [Type; 12] = [
        Type::FixedLine,
        Type::Mobile,
        Type::TollFree,
        Type::PremiumRate,
        Type::SharedCost,
        Type::PersonalNumber,
        Type::Voip,
        Type::Pager,
        Type::Uan,
        Type::Emergency,
        Type::Voicemail,
        Type::NoInternational,
    ];

    #[test]
    fn agrees_with_phonenumber_on_every_regions_examples() {
        let mut compared = 0;
        for code in 1..1000u16 {
            for region in DATABASE.region(&code).unwrap_or_default() {
                let meta = DATABASE.by_id(region).expect("listed region");
                for kind in TYPES {
                    let example = meta.descriptors().get(kind).and_then(Descriptor::example);
                    for text in example
                        .into_iter()
                        .flat_map(|e| [e.to_string(), format!("{e}9")])
                    {
                        if let Ok(n) = phonenumber::parse(None, format!("+{code}{text}")) {
                            agree(&n);
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared > 2_000, "only {compared} examples");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]
        #[test]
        fn agrees_with_phonenumber_on_any_digits(
            code in prop::sample::select(vec![1u16, 7, 33, 39, 44, 49, 61, 81, 86, 91, 262, 358, 800, 882, 979]),
            digits in "[0-9]{3,15}",
        ) {
            if let Ok(n) = phonenumber::parse(None, format!("+{code}{digits}")) {
                agree(&n);
            }
        }
    }
}
