//! Version skew rules between components (spec §1.3), checked at plan time.
//!
//! A rule names skew groups on a `left` and (optionally) a `right` side; the minor versions of
//! every pair across the sides (or within `left` when `right` is empty) may differ by at most
//! `max-minor-distance`, and their majors must be equal. Every violation is reported.

use std::fmt;

use crate::files::Bundle;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: String,
    pub description: String,
    pub a: (String, String),
    pub b: (String, String),
    pub allowed: u64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.allowed == 0 { "the same minor".to_owned() } else { format!("at most {} minor apart", self.allowed) };
        write!(
            f,
            "skew rule `{}` ({}): `{}` is `{}` and `{}` is `{}`; they must be {what} on the same major",
            self.rule, self.description, self.a.0, self.a.1, self.b.0, self.b.1
        )
    }
}

/// Every violation of the bundle's skew rules.
pub fn check(bundle: &Bundle) -> Vec<Violation> {
    let mut out = Vec::new();
    for rule in &bundle.skew_rules {
        let members = |groups: &[String]| bundle.components.iter().filter(|c| groups.contains(&c.skew_group)).collect::<Vec<_>>();
        let left = members(&rule.left);
        let right = if rule.right.is_empty() { left.clone() } else { members(&rule.right) };
        for (i, a) in left.iter().enumerate() {
            for (j, b) in right.iter().enumerate() {
                // Within one side, look at each unordered pair once.
                if rule.right.is_empty() && j <= i {
                    continue;
                }
                if a.name == b.name {
                    continue;
                }
                let ok = a.version.major == b.version.major && a.version.minor.abs_diff(b.version.minor) <= rule.max_minor_distance;
                if !ok {
                    out.push(Violation {
                        rule: rule.id.clone(),
                        description: rule.description.clone(),
                        a: (a.name.clone(), a.version.to_string()),
                        b: (b.name.clone(), b.version.to_string()),
                        allowed: rule.max_minor_distance,
                    });
                }
            }
        }
    }
    out
}
