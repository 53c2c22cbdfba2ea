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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A bundle with the given components (name, version, group) and skew rules.
    fn bundle(components: &[(&str, &str, &str)], rules: &str) -> Bundle {
        let mut t = String::from("[release]\nversion = \"2.4.1\"\nregistry = \"registry.example/stellaops\"\n\n");
        t += rules;
        for (name, version, group) in components {
            t += &format!(
                "\n[[component]]\nname = \"{name}\"\nversion = \"{version}\"\nskew-group = \"{group}\"\nplatforms = [\"linux/amd64\"]\n\
                 base = \"runtime\"\nsource = {{ path = \"components/{name}\" }}\nrecipe = {{ entrypoint = [\"/bin/{name}\"] }}\n"
            );
        }
        toml::from_str(&t).unwrap()
    }

    const TRUST_SCANNER: &str = "[[skew-rule]]\nid = \"trust-scanner\"\ndescription = \"trust and scanner\"\n\
                                 left = [\"trust\"]\nright = [\"scanner\"]\nmax-minor-distance = 1\n";
    const TRUST_SAME: &str =
        "[[skew-rule]]\nid = \"trust-same\"\ndescription = \"trust in lockstep\"\nleft = [\"trust\"]\nmax-minor-distance = 0\n";

    #[test]
    fn within_distance_passes() {
        let b = bundle(&[("authority", "2.4.0", "trust"), ("signer", "2.4.3", "trust"), ("scanner", "2.5.0", "scanner")], TRUST_SCANNER);
        assert_eq!(check(&b), Vec::new());
    }

    #[test]
    fn across_sides_every_pair_too_far_is_reported() {
        let b = bundle(
            &[("authority", "2.4.0", "trust"), ("signer", "2.6.0", "trust"), ("scanner", "2.6.1", "scanner"), ("ui", "1.0.0", "ui")],
            TRUST_SCANNER,
        );
        let v = check(&b);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].a, ("authority".to_owned(), "2.4.0".to_owned()));
        assert_eq!(v[0].b, ("scanner".to_owned(), "2.6.1".to_owned()));
        assert_eq!(v[0].allowed, 1);
        assert_eq!(
            v[0].to_string(),
            "skew rule `trust-scanner` (trust and scanner): `authority` is `2.4.0` and `scanner` is `2.6.1`; \
             they must be at most 1 minor apart on the same major"
        );
    }

    #[test]
    fn majors_must_match_even_with_equal_minors() {
        let b = bundle(&[("authority", "3.4.0", "trust"), ("scanner", "2.4.0", "scanner")], TRUST_SCANNER);
        assert_eq!(check(&b).len(), 1);
    }

    #[test]
    fn within_one_side_each_unordered_pair_once() {
        let b = bundle(&[("authority", "2.4.0", "trust"), ("signer", "2.5.0", "trust"), ("issuer", "2.4.9", "trust")], TRUST_SAME);
        let v = check(&b);
        let pairs: Vec<(&str, &str)> = v.iter().map(|v| (v.a.0.as_str(), v.b.0.as_str())).collect();
        assert_eq!(pairs, [("authority", "signer"), ("signer", "issuer")]);
        assert!(v[0].to_string().contains("they must be the same minor on the same major"), "{}", v[0]);
    }

    #[test]
    fn no_rules_no_violations() {
        let b = bundle(&[("authority", "1.0.0", "trust"), ("scanner", "9.9.9", "scanner")], "");
        assert!(check(&b).is_empty());
    }
}
