//! Version requirements for `appium:platformVersion` and `browserVersion` (pure).
//!
//! Syntax (documented in broker/src/grid/GRID.md): `14` (exact, on the components given: `14`
//! matches `14`, `14.0`, `14.1.2`), `>=13`, `>13`, `<=14`, `<14`, `13-14`
//! (inclusive on both ends: `13-14` matches 13.x and 14.x), and
//! comma-separated conjunctions (`>=13,<15`). Comparison is numeric per dotted
//! component, on the components the bound gives (`>13` means 14 and later,
//! `<=14` includes 14.5). `latest`, `stable` and the empty string match any
//! version; any other non-numeric value matches only the same string
//! (case-insensitive).

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Clause {
    Exact(Vec<u64>),
    AtLeast(Vec<u64>),
    Above(Vec<u64>),
    AtMost(Vec<u64>),
    Below(Vec<u64>),
    Between(Vec<u64>, Vec<u64>),
    Named(String),
    Any,
}

/// A parsed requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSpec(Vec<Clause>);

fn numbers(s: &str) -> Option<Vec<u64>> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    s.split('.').map(|p| p.parse::<u64>().ok()).collect()
}

/// `v` cut (or padded with zeros) to `bound`'s length, compared with `bound`.
fn cmp_prefix(v: &[u64], bound: &[u64]) -> Ordering {
    for (i, b) in bound.iter().enumerate() {
        let x = v.get(i).copied().unwrap_or(0);
        match x.cmp(b) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    Ordering::Equal
}

impl VersionSpec {
    pub fn parse(spec: &str) -> Result<VersionSpec, String> {
        let spec = spec.trim();
        if spec.is_empty()
            || spec.eq_ignore_ascii_case("latest")
            || spec.eq_ignore_ascii_case("stable")
        {
            return Ok(VersionSpec(vec![Clause::Any]));
        }
        let mut clauses = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            let need = |s: &str| {
                numbers(s).ok_or_else(|| {
                    format!("{s:?} is not a dotted version number (e.g. 13 or 13.1)")
                })
            };
            let clause = if let Some(v) = part.strip_prefix(">=") {
                Clause::AtLeast(need(v)?)
            } else if let Some(v) = part.strip_prefix("<=") {
                Clause::AtMost(need(v)?)
            } else if let Some(v) = part.strip_prefix('>') {
                Clause::Above(need(v)?)
            } else if let Some(v) = part.strip_prefix('<') {
                Clause::Below(need(v)?)
            } else if let Some(v) = part.strip_prefix('=') {
                Clause::Exact(need(v)?)
            } else if let Some(n) = numbers(part) {
                Clause::Exact(n)
            } else if let Some((a, b)) = part
                .split_once('-')
                .filter(|(a, b)| numbers(a).is_some() && numbers(b).is_some())
            {
                Clause::Between(need(a)?, need(b)?)
            } else if spec.contains(',') || part.starts_with(['>', '<', '=']) {
                return Err(format!(
                    "cannot read {part:?}; use 14, >=13, <15, 13-14 or >=13,<15"
                ));
            } else {
                Clause::Named(part.to_ascii_lowercase())
            };
            clauses.push(clause);
        }
        Ok(VersionSpec(clauses))
    }

    /// Whether `actual` (e.g. a device's Android version) satisfies every clause.
    pub fn matches(&self, actual: &str) -> bool {
        let parsed = numbers(actual);
        self.0.iter().all(|c| match (c, &parsed) {
            (Clause::Any, _) => true,
            (Clause::Named(n), _) => actual.trim().eq_ignore_ascii_case(n),
            (_, None) => false,
            (Clause::Exact(b), Some(v)) => cmp_prefix(v, b) == Ordering::Equal,
            (Clause::AtLeast(b), Some(v)) => cmp_prefix(v, b) != Ordering::Less,
            (Clause::Above(b), Some(v)) => cmp_prefix(v, b) == Ordering::Greater,
            (Clause::AtMost(b), Some(v)) => cmp_prefix(v, b) != Ordering::Greater,
            (Clause::Below(b), Some(v)) => cmp_prefix(v, b) == Ordering::Less,
            (Clause::Between(lo, hi), Some(v)) => {
                cmp_prefix(v, lo) != Ordering::Less && cmp_prefix(v, hi) != Ordering::Greater
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, yes: &[&str], no: &[&str]) {
        let s = VersionSpec::parse(spec).expect(spec);
        for v in yes {
            assert!(s.matches(v), "{spec} should match {v}");
        }
        for v in no {
            assert!(!s.matches(v), "{spec} should not match {v}");
        }
    }

    #[test]
    fn the_documented_forms() {
        check("14", &["14", "14.0", "14.1.2"], &["13", "15", "1", "x"]);
        check("14.1", &["14.1", "14.1.9"], &["14", "14.2"]);
        check(">=13", &["13", "13.5", "14"], &["12", "12.9"]);
        check(">13", &["14"], &["13", "13.5"]);
        check("<=14", &["14", "14.5", "9"], &["15"]);
        check("<14", &["13.9"], &["14", "14.0"]);
        check("13-14", &["13", "14.9"], &["12", "15"]);
        check(">=13,<15", &["13", "14.2"], &["12", "15"]);
        check("latest", &["1", "x"], &[]);
        check("Tiramisu", &["tiramisu"], &["13"]);
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for bad in [">=x", "<", ">=13,abc", "=a"] {
            assert!(VersionSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
