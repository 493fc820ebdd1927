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
    /// The shape of a longer slug's shortened schema name ([`Slug::schema`]).
    #[error(
        "a slug of 61 characters may not end in `-` and ten hexadecimal digits (the form a longer slug's database schema name is shortened to)"
    )]
    LikeShortened,
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

    /// A slug for a new tenant: as [`Slug::parse`], and not of the one shape whose schema name
    /// a longer slug's shortened one can take (61 characters ending in `-` and ten hexadecimal
    /// digits), so that distinct tenants keep distinct schemas.
    pub fn parse_new(s: &str) -> Result<Slug, SlugError> {
        let slug = Slug::parse(s)?;
        let plain_name_is_longest = "t_".len() + slug.0.len() == MAX_IDENTIFIER;
        let digest_tail = slug.0.len().checked_sub(11).map(|at| &slug.0[at..]);
        let like_shortened = plain_name_is_longest
            && digest_tail.is_some_and(|tail| {
                tail.starts_with('-') && tail[1..].bytes().all(|b| b.is_ascii_hexdigit())
            });
        if like_shortened {
            return Err(SlugError::LikeShortened);
        }
        Ok(slug)
    }

    /// [`SLUG_PATTERN`] without the reserved words and the shape [`Slug::parse_new`] refuses
    /// (lookaheads, which ECMA-262 and Python regular expressions both read): what a new
    /// tenant's slug must match.
    pub fn available_pattern() -> String {
        format!(
            "^(?!({})$)(?![a-z0-9-]{{50}}-[0-9a-f]{{10}}$){}",
            RESERVED.join("|"),
            &SLUG_PATTERN[1..]
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `t_<slug>` with `-` as `_`. Slugs too long for a PostgreSQL identifier keep a prefix and
    /// gain a digest of the whole slug, so distinct slugs keep distinct schemas (a new slug of
    /// the one shape a shortened name can take is refused: [`Slug::parse_new`]).
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
    fn no_new_slug_takes_a_longer_one_s_shortened_schema() {
        let long = Slug::parse(&format!("a{}", "b".repeat(61))).unwrap();
        let shortened = long.schema();
        // The 61-character slug whose plain schema name is the long one's shortened name.
        let lookalike = shortened["t_".len()..].replace('_', "-");
        assert_eq!(Slug::parse(&lookalike).unwrap().schema(), shortened);
        assert_eq!(Slug::parse_new(&lookalike), Err(SlugError::LikeShortened));
        assert!(Slug::parse_new(long.as_str()).is_ok());
        let plain = format!("a{}", "b".repeat(60));
        assert!(Slug::parse_new(&plain).is_ok());
        assert!(Slug::parse_new(&format!("{}-0123456789", "a".repeat(50))).is_err());
        assert!(Slug::parse_new(&format!("{}-012345678g", "a".repeat(50))).is_ok());
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
