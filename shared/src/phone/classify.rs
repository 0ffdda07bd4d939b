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

/// Most patterns a thread keeps compiled (about 20 regions' worth; a US number needs 12):
/// at about 17 kB each, 4 MB per thread. Past it the thread starts again from none, so numbers
/// from every region at once cost compiles (as phonenumber's own 100-entry cache does then),
/// never unbounded memory: the metadata has about 1,400 patterns.
const MOST_COMPILED: usize = 256;

/// `pattern` compiled as phonenumber's metadata compiles it (`None` if it does not compile,
/// which phonenumber's own lookup would report as no match too).
fn compiled(pattern: &'static CachedRegex) -> Option<Rc<Regex>> {
    let key = std::ptr::from_ref(pattern) as usize;
    if let Some(re) = COMPILED.with_borrow(|c| c.get(&key).cloned()) {
        return Some(re);
    }
    let re = Rc::new(build(pattern.as_str()).ok()?);
    COMPILED.with_borrow_mut(|c| {
        if c.len() >= MOST_COMPILED {
            c.clear();
        }
        c.insert(key, re.clone())
    });
    Some(re)
}

/// Compiles a metadata pattern: phonenumber's options (`ignore_whitespace`), ASCII classes
/// only. The text matched is always ASCII digits (`u64::to_string`), so `\d` and friends match
/// the same; compiled without Unicode tables a pattern takes about 17 kB instead of 116 kB
/// (attack_s42b).
fn build(source: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(source)
        .ignore_whitespace(true)
        .unicode(false)
        .build()
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
    country(region, DATABASE.by_id(region)?)
}

/// `meta`, the metadata of `region`, if the region's id names a country.
fn country(region: &str, meta: &'static Metadata) -> Option<&'static Metadata> {
    region
        .parse::<phonenumber::country::Id>()
        .ok()
        .map(|_| meta)
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
                return (country(region, meta), None);
            }
        } else {
            let kind = number_type(meta, national);
            if kind != Type::Unknown {
                return (country(region, meta), Some(kind));
            }
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The types whose descriptors have example numbers and patterns.
    pub(super) const TYPES: [Type; 10] = [
        Type::FixedLine,
        Type::Mobile,
        Type::TollFree,
        Type::PremiumRate,
        Type::SharedCost,
        Type::PersonalNumber,
        Type::Voip,
        Type::Pager,
        Type::Uan,
        Type::Voicemail,
    ];

    /// Both classifications of `n` (type, region, country), which must agree.
    fn agree(n: &PhoneNumber) {
        let (meta, kind) = region_and_type(n);
        assert_eq!(kind, n.number_type(&DATABASE), "type of {n:?}");
        assert_eq!(
            meta.map(std::ptr::from_ref),
            n.metadata(&DATABASE).map(std::ptr::from_ref),
            "region of {n:?}"
        );
        assert_eq!(
            meta.and_then(|m| m.id().parse::<phonenumber::country::Id>().ok()),
            n.country().id(),
            "country of {n:?}"
        );
    }

    fn codes() -> Vec<u16> {
        (1..1000u16)
            .filter(|c| DATABASE.region(c).is_some())
            .collect()
    }

    /// Every region that names a country.
    fn ids() -> Vec<String> {
        codes()
            .into_iter()
            .flat_map(|c| DATABASE.region(&c).unwrap_or_default())
            .filter(|r| r.parse::<phonenumber::country::Id>().is_ok())
            .map(str::to_string)
            .collect()
    }

    /// Every region's example numbers, cut to every length, padded with zeros or nines and
    /// led by zeros (Italy-style): helper-72's comparison (attack_s42b).
    #[test]
    fn agrees_with_phonenumber_on_every_regions_examples_cut_and_padded() {
        let mut compared = 0;
        for code in codes() {
            for region in DATABASE.region(&code).unwrap_or_default() {
                let d = DATABASE.by_id(region).expect("listed region").descriptors();
                let examples = TYPES.iter().filter_map(|k| d.get(*k)?.example());
                for e in examples {
                    for cut in 1..=e.len() {
                        for tail in ["", "0", "9", "00", "99", "0000000000", "9999999999"] {
                            for lead in ["", "0", "00"] {
                                let text = format!("+{code}{lead}{}{tail}", &e[..cut]);
                                if let Ok(n) = phonenumber::parse(None, &text) {
                                    agree(&n);
                                    compared += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(compared > 10_000, "only {compared} numbers");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        #[test]
        fn agrees_with_phonenumber_on_any_code_and_digits(
            code in prop::sample::select(codes()),
            digits in "0{0,3}[0-9]{1,19}",
        ) {
            if let Ok(n) = phonenumber::parse(None, format!("+{code}{digits}")) {
                agree(&n);
            }
        }

        /// National numbers read with any default country, as number rules read them.
        #[test]
        fn agrees_with_phonenumber_on_national_numbers_of_any_country(
            region in prop::sample::select(ids()),
            digits in "[0-9]{1,20}",
        ) {
            let id: phonenumber::country::Id = region.parse().expect("a country");
            if let Ok(n) = phonenumber::parse(Some(id), &digits) {
                agree(&n);
            }
        }
    }
}

/// The bound on memory: every pattern of the metadata compiles with this module's options
/// (ASCII only), and a compiled pattern stays small enough that a full per-thread map is a
/// few megabytes (attack_s42b: with Unicode classes a pattern took about 125 kB and a full map
/// of 1,024 about 126 MB per thread, past the functions' 128 MiB limit).
#[cfg(test)]
mod bounds {
    use super::{tests::TYPES, *};

    /// Every national-number and leading-digits pattern of the metadata.
    fn patterns() -> Vec<&'static CachedRegex> {
        let mut all = Vec::new();
        for code in 1..1000u16 {
            for region in DATABASE.region(&code).unwrap_or_default() {
                let meta = DATABASE.by_id(region).expect("listed region");
                all.extend(meta.leading_digits());
                let d = meta.descriptors();
                all.push(d.general().national_number());
                let typed = TYPES.iter().filter_map(|k| d.get(*k));
                all.extend(typed.map(Descriptor::national_number));
            }
        }
        all
    }

    #[test]
    fn every_pattern_compiles_small() {
        let all = patterns();
        assert!(all.len() > 1_000, "only {} patterns", all.len());
        for pattern in all {
            let re = build(pattern.as_str())
                .unwrap_or_else(|e| panic!("{} does not compile: {e}", pattern.as_str()));
            // A full match of a digit string behaves as phonenumber's (Unicode) compile.
            let theirs = regex::RegexBuilder::new(pattern.as_str())
                .ignore_whitespace(true)
                .build()
                .expect("phonenumber's options");
            for digits in [
                "0",
                "1",
                "12345678",
                "0123456789012",
                "99999999999999999999",
            ] {
                assert_eq!(
                    re.find(digits).map(|m| (m.start(), m.end())),
                    theirs.find(digits).map(|m| (m.start(), m.end())),
                    "{} on {digits}",
                    pattern.as_str()
                );
            }
        }
    }
}
