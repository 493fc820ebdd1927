//! References to secrets in text (`${secret:erp-token}`), turned into values only when a process
//! runs.
//!
//! Invariants:
//! - The text is bounded (size and number of references) before it is scanned.
//! - Each reference is decided on its own (`secret.use` on that secret) and each decision is its
//!   own audit event naming the secret and the version used, never the value; one denial or
//!   unknown name fails the whole resolution and no value is returned.
//! - The result is a [`SecretString`]; errors name secrets, never values.

use secrecy::{ExposeSecret as _, SecretString};

use super::{ValueError, by_name, check_name, value_of};
use crate::authz::actions::SecretUse;
use crate::authz::schema::EntityKind;
use crate::tenancy::TenancyError;
use crate::tenancy::work::{TenantContext, WorkError};

/// The longest text the resolver scans.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// The most references one text may hold.
pub const MAX_REFERENCES: usize = 32;

const OPEN: &str = "${secret:";

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "the text is longer than {MAX_TEXT_BYTES} bytes or holds more than {MAX_REFERENCES} secret references"
    )]
    TooLarge,
    #[error("a secret reference at byte {0} is not `${{secret:NAME}}`")]
    Malformed(usize),
    #[error("there is no secret named `{0}`")]
    Unknown(String),
    #[error("the caller may not use the secret `{0}`")]
    Denied(String),
    #[error("the secret `{0}` has no readable value")]
    NoValue(String),
    #[error(transparent)]
    KeyStore(#[from] crate::keystore::KeyStoreError),
    #[error(transparent)]
    Work(#[from] WorkError),
}

impl From<TenancyError> for ResolveError {
    fn from(e: TenancyError) -> Self {
        ResolveError::Work(e.into())
    }
}

impl From<sea_orm::DbErr> for ResolveError {
    fn from(e: sea_orm::DbErr) -> Self {
        ResolveError::Work(e.into())
    }
}

/// One `${secret:NAME}` in a text: its byte range and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference<'a> {
    pub range: std::ops::Range<usize>,
    pub name: &'a str,
}

/// The references of `text`, in order, each with a valid name.
pub fn references(text: &str) -> Result<Vec<Reference<'_>>, ResolveError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(ResolveError::TooLarge);
    }
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(OPEN).map(|i| from + i) {
        let name_start = at + OPEN.len();
        let end = text[name_start..]
            .find('}')
            .map(|i| name_start + i)
            .ok_or(ResolveError::Malformed(at))?;
        let name = &text[name_start..end];
        check_name(name).map_err(|_| ResolveError::Malformed(at))?;
        if found.len() == MAX_REFERENCES {
            return Err(ResolveError::TooLarge);
        }
        found.push(Reference {
            range: at..end + 1,
            name,
        });
        from = end + 1;
    }
    Ok(found)
}

/// `text` with every reference replaced by the current value of the secret it names, for the
/// principal of `work`, who must be allowed `secret.use` on each.
pub async fn resolve(work: &TenantContext, text: &str) -> Result<SecretString, ResolveError> {
    let references = references(text)?;
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let tx = work.read().await?;
    for reference in &references {
        let secret = by_name(&tx, reference.name)
            .await?
            .ok_or_else(|| ResolveError::Unknown(reference.name.to_owned()))?;
        let resource = work
            .policies()
            .resource_in(EntityKind::Secret, secret.id.to_string(), secret.folder_id)
            .ok_or_else(|| ResolveError::Unknown(reference.name.to_owned()))?;
        let details = [
            ("name", serde_json::Value::from(secret.name.clone())),
            ("version", secret.current_version.into()),
        ];
        match work.authorize_use::<SecretUse>(resource, &details).await {
            Ok(_) => {}
            Err(WorkError::Denied(_)) => {
                return Err(ResolveError::Denied(reference.name.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
        let (_, value) = value_of(&tx, work.keystore(), work.slug().as_str(), &secret, None)
            .await
            .map_err(|e| match e {
                ValueError::NoVersion(_) => ResolveError::NoValue(reference.name.to_owned()),
                ValueError::KeyStore(e) => e.into(),
                ValueError::Db(e) => e.into(),
            })?;
        out.push_str(&text[copied..reference.range.start]);
        out.push_str(value.expose_secret());
        copied = reference.range.end;
    }
    tx.commit().await?;
    out.push_str(&text[copied..]);
    Ok(SecretString::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references_and_refuses_malformed_ones() {
        let refs = references("Bearer ${secret:erp-token} and ${secret:db.url}!").unwrap();
        let names: Vec<_> = refs.iter().map(|r| r.name).collect();
        assert_eq!(names, ["erp-token", "db.url"]);
        assert_eq!(refs[0].range, 7..26);
        assert!(references("no references here").unwrap().is_empty());
        for bad in [
            "${secret:unclosed",
            "${secret:}",
            "${secret:a b}",
            "${secret:-x}",
        ] {
            assert!(
                matches!(references(bad), Err(ResolveError::Malformed(0))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bounds_the_text_before_scanning() {
        assert!(matches!(
            references(&"x".repeat(MAX_TEXT_BYTES + 1)),
            Err(ResolveError::TooLarge)
        ));
        let many = "${secret:a}".repeat(MAX_REFERENCES + 1);
        assert!(matches!(references(&many), Err(ResolveError::TooLarge)));
        assert_eq!(
            references(&"${secret:a}".repeat(MAX_REFERENCES))
                .unwrap()
                .len(),
            MAX_REFERENCES
        );
    }
}
