//! Tenant slugs: the validated name that also names the schema or file.

use std::fmt;

/// Words that cannot be tenant slugs: they name platform paths or would confuse operators.
const RESERVED: &[&str] = &[
    "admin",
    "api",
    "auth",
    "default",
    "docs",
    "flowgate",
    "healthz",
    "internal",
    "login",
    "logout",
    "metrics",
    "null",
    "openapi",
    "operator",
    "platform",
    "public",
    "readyz",
    "root",
    "static",
    "system",
    "tenant",
    "tenants",
    "well-known",
    "www",
];

/// Longest PostgreSQL identifier (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;

/// What every slug matches (and, besides, is not reserved).
pub const SLUG_PATTERN: &str = "^[a-z][a-z0-9-]{1,62}$";

/// A tenant slug matching [`SLUG_PATTERN`] and not reserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error(
        "must match ^[a-z][a-z0-9-]{{1,62}}$ (2 to 63 characters: lower-case letters, digits and hyphens, starting with a letter)"
    )]
    Format,
    #[error("`{0}` is reserved")]
    Reserved(String),
}

impl Slug {
    pub fn parse(s: &str) -> Result<Slug, SlugError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !(first_ok && rest_ok && (2..=63).contains(&s.len())) {
            return Err(SlugError::Format);
        }
        if RESERVED.contains(&s) {
            return Err(SlugError::Reserved(s.to_owned()));
        }
        Ok(Slug(s.to_owned()))
    }

    /// [`SLUG_PATTERN`] without the reserved words (a lookahead, which ECMA-262 and Python
    /// regular expressions both read): what a new tenant's slug must match.
    pub fn available_pattern() -> String {
        format!("^(?!({})$){}", RESERVED.join("|"), &SLUG_PATTERN[1..])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `t_<slug>` with `-` as `_`. Slugs too long for a PostgreSQL identifier keep a prefix and
    /// gain a digest of the whole slug, so distinct slugs keep distinct schemas.
    pub fn schema(&self) -> String {
        let name = format!("t_{}", self.0.replace('-', "_"));
        if name.len() <= MAX_IDENTIFIER {
            return name;
        }
        let digest = crate::crypto::sha256_hex(self.0.as_bytes());
        let keep = MAX_IDENTIFIER - 1 - 10;
        format!("{}_{}", &name[..keep], &digest[..10])
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_shape() {
        for ok in [
            "ab",
            "acme",
            "acme-2",
            "a1",
            &format!("a{}", "b".repeat(62)),
        ] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "a",
            "1acme",
            "-acme",
            "Acme",
            "ac_me",
            "ac me",
            "acmé",
            "a/b",
            "a.b",
            &format!("a{}", "b".repeat(63)),
        ] {
            assert_eq!(Slug::parse(bad), Err(SlugError::Format), "{bad}");
        }
        assert!(matches!(Slug::parse("api"), Err(SlugError::Reserved(_))));
    }

    #[test]
    fn schemas_are_postgres_identifiers_and_distinct() {
        assert_eq!(Slug::parse("acme-corp").unwrap().schema(), "t_acme_corp");
        let long_a = Slug::parse(&format!("a{}x", "b".repeat(61))).unwrap();
        let long_b = Slug::parse(&format!("a{}y", "b".repeat(61))).unwrap();
        assert!(long_a.schema().len() <= MAX_IDENTIFIER);
        assert_ne!(long_a.schema(), long_b.schema());
    }
}
