//! SAML 2.0 sign-in: the Web Browser SSO profile, begun by Flowgate (the AuthnRequest goes out
//! by HTTP-Redirect, the provider's Response comes back by HTTP-POST to the ACS).
//!
//! `samael` (with xmlsec) verifies the XML signatures and checks the assertion's conditions;
//! this module decides what it is given and what it accepts.
//!
//! Invariants:
//! - Every document from outside (metadata, responses) passes [`screen`] before any
//!   tree-building parser sees it: bounded size and depth, no DTD (so no entity expansion), and
//!   at most one assertion in a response, so that no signature-wrapping variant can offer a
//!   second, unsigned assertion beside the signed one.
//! - A provider is accepted only with at least one signing certificate in its metadata: without
//!   one, samael would read an unsigned response.
//! - An assertion is believed only when its signature (or that of the response around it)
//!   verifies against the provider's certificates with an allowed algorithm ([`ALLOWED`], no
//!   SHA-1); only the signed element's content is read afterwards (samael reduces the document
//!   to what the signature covers). It must come from the provider's entity id, be addressed
//!   to this provider's ACS, restrict its audience to this provider's entity id, answer the
//!   AuthnRequest of the login it completes, and be within its validity window.
//! - An assertion signs nobody in twice: its `ID` is spent in the tenant's ledger
//!   (`logins::spend_assertion`) before the session opens.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use quick_xml::events::Event;
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer};
use samael::metadata::{
    EntityDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING, IndexedEndpoint, SpSsoDescriptor,
};
use samael::schema::Assertion;
use samael::service_provider::{Error as SamlError, ServiceProvider};
use samael::traits::ToXml as _;
use serde_json::{Map, Value};

use super::providers::SamlSettings;
use super::{Refusal, SignInError, Vouched};
use crate::crypto::{random_token, sha256_hex};

/// Signature algorithms an assertion or response may be signed with (SHA-2 only).
const ALLOWED: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];
/// Longest SAML document read (metadata, or a decoded response).
pub const MAX_DOCUMENT: usize = 256 * 1024;
/// Deepest element nesting accepted; SAML responses and metadata need about ten.
const MAX_DEPTH: usize = 32;
/// Clock skew allowed on the assertion's time bounds.
const SKEW: Duration = Duration::seconds(60);
/// Oldest `IssueInstant` accepted: an assertion is used within moments of being issued.
const MAX_ISSUE_DELAY: Duration = Duration::minutes(5);
/// Most attributes, and values per attribute, read from an assertion.
const MAX_ATTRIBUTES: usize = 256;
const MAX_VALUES: usize = 1000;
const EMAIL_NAME_ID: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
const TRANSIENT_NAME_ID: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// What a screened document holds.
struct Screened {
    /// `Assertion` and `EncryptedAssertion` elements, at any depth.
    assertions: usize,
}

/// Reads `xml` once as a stream, without building anything: refuses documents larger than
/// [`MAX_DOCUMENT`], nested deeper than [`MAX_DEPTH`], with a DTD, or not well-formed.
fn screen(xml: &str) -> Result<Screened, &'static str> {
    if xml.len() > MAX_DOCUMENT {
        return Err("is larger than 256 KiB");
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    let mut assertions = 0usize;
    let mut count = |name: &[u8]| {
        if matches!(name, b"Assertion" | b"EncryptedAssertion") {
            assertions += 1;
        }
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(element)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err("is nested too deeply");
                }
                count(element.local_name().as_ref());
            }
            Ok(Event::Empty(element)) => count(element.local_name().as_ref()),
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::DocType(_)) => return Err("must not have a document type declaration"),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(_) => return Err("is not well-formed XML"),
        }
    }
    Ok(Screened { assertions })
}

/// An identity provider's metadata, read and found usable.
pub struct IdpMetadata {
    descriptor: EntityDescriptor,
    entity_id: String,
    sso_url: String,
    certificates: Vec<CertificateDer>,
}

impl IdpMetadata {
    /// Reads a metadata document: one `EntityDescriptor` with an IdP role, a single sign-on
    /// service for the HTTP-Redirect binding and at least one signing certificate.
    pub fn read(xml: &str) -> Result<Self, String> {
        screen(xml).map_err(|why| format!("the metadata {why}"))?;
        let descriptor: EntityDescriptor = xml.parse().map_err(|_| {
            "must be a SAML 2.0 metadata document with one EntityDescriptor".to_owned()
        })?;
        let entity_id = descriptor
            .entity_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or("the EntityDescriptor has no entityID")?;
        let probe = ServiceProvider {
            idp_metadata: descriptor.clone(),
            ..ServiceProvider::default()
        };
        let sso_url = probe
            .sso_binding_location(HTTP_REDIRECT_BINDING)
            .ok_or("the provider has no SingleSignOnService with the HTTP-Redirect binding")?;
        url::Url::parse(&sso_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or("the SingleSignOnService location is not an http(s) URL")?;
        let certificates = probe
            .idp_signing_certs()
            .map_err(|_| "a signing certificate of the provider cannot be read".to_owned())?
            .unwrap_or_default();
        if certificates.is_empty() {
            return Err("the provider publishes no signing certificate".into());
        }
        Ok(IdpMetadata {
            descriptor,
            entity_id,
            sso_url,
            certificates,
        })
    }

    /// The provider's entity id: the issuer of its assertions.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// SHA-256 fingerprints (hex) of the provider's signing certificates.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certificates
            .iter()
            .map(|c| sha256_hex(c.der_data()))
            .collect()
    }
}

/// Flowgate's side of one provider: what the provider knows it by.
pub struct Endpoints {
    /// Flowgate's entity id for this provider (its SP metadata URL).
    pub entity_id: String,
    /// The Assertion Consumer Service URL.
    pub acs_url: String,
}

impl Endpoints {
    /// The SP metadata document to give the provider.
    pub fn metadata(&self) -> Result<String, SignInError> {
        let descriptor = EntityDescriptor {
            entity_id: Some(self.entity_id.clone()),
            sp_sso_descriptors: Some(vec![SpSsoDescriptor {
                protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".into()),
                authn_requests_signed: Some(false),
                want_assertions_signed: Some(true),
                name_id_formats: Some(vec![
                    "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into(),
                ]),
                assertion_consumer_services: vec![IndexedEndpoint {
                    binding: HTTP_POST_BINDING.into(),
                    location: self.acs_url.clone(),
                    response_location: None,
                    index: 0,
                    is_default: Some(true),
                }],
                ..SpSsoDescriptor::default()
            }]),
            ..EntityDescriptor::default()
        };
        descriptor
            .to_string()
            .map_err(|e| SignInError::Unexpected(anyhow::anyhow!("SP metadata: {e:?}")))
    }

    fn service_provider(&self, idp: &IdpMetadata) -> ServiceProvider {
        ServiceProvider {
            entity_id: Some(self.entity_id.clone()),
            acs_url: Some(self.acs_url.clone()),
            idp_metadata: idp.descriptor.clone(),
            allow_idp_initiated: false,
            max_issue_delay: MAX_ISSUE_DELAY,
            max_clock_skew: SKEW,
            allowed_signature_algorithms: Some(ALLOWED.to_vec()),
            ..ServiceProvider::default()
        }
    }
}

/// A login begun at a SAML provider.
pub struct Begun {
    /// Where to send the browser: the provider's SSO service with the AuthnRequest.
    pub redirect_url: String,
    /// The AuthnRequest's `ID`, which the assertion must answer.
    pub request_id: String,
    /// The `RelayState` the provider sends back, which names the login.
    pub relay_state: String,
}

/// Begins a login: an AuthnRequest with a fresh unguessable `ID`, by HTTP-Redirect.
pub fn begin(settings: &SamlSettings, endpoints: &Endpoints) -> Result<Begun, SignInError> {
    let idp = IdpMetadata::read(&settings.metadata_xml).map_err(SignInError::Provider)?;
    let sp = endpoints.service_provider(&idp);
    let mut request = sp
        .make_authentication_request(&idp.sso_url)
        .map_err(|e| SignInError::Unexpected(anyhow::anyhow!("AuthnRequest: {e}")))?;
    // An xs:ID starts with a letter or `_`; samael's own is 32 random bits, too few.
    request.id = format!(
        "_{}",
        random_token::<16>().map_err(SignInError::Unexpected)?
    );
    let relay_state = random_token::<32>().map_err(SignInError::Unexpected)?;
    let url = request
        .redirect(&relay_state)
        .map_err(|e| SignInError::Unexpected(anyhow::anyhow!("AuthnRequest: {e}")))?
        .ok_or_else(|| {
            SignInError::Unexpected(anyhow::anyhow!("AuthnRequest has no destination"))
        })?;
    Ok(Begun {
        redirect_url: url.to_string(),
        request_id: request.id,
        relay_state,
    })
}

/// An assertion that was accepted, to be spent in the ledger before anyone is signed in.
pub struct Accepted {
    pub vouched: Vouched,
    /// The assertion's `ID`.
    pub assertion_id: String,
    /// Until when the assertion would be acceptable: its ledger entry lives that long.
    pub valid_until: DateTime<Utc>,
}

/// Verifies the provider's `SAMLResponse` (base64, as posted) for the login whose
/// AuthnRequest had `request_id`.
pub async fn finish(
    settings: &SamlSettings,
    endpoints: &Endpoints,
    encoded: &str,
    request_id: &str,
) -> Result<Accepted, SignInError> {
    if encoded.len() > MAX_DOCUMENT * 4 / 3 + 4 {
        return Err(Refusal::Structure.into());
    }
    let bytes = STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refusal::Malformed)?;
    let xml = String::from_utf8(bytes).map_err(|_| Refusal::Malformed)?;
    if screen(&xml).map_err(|_| Refusal::Structure)?.assertions != 1 {
        return Err(Refusal::Structure.into());
    }
    let idp = IdpMetadata::read(&settings.metadata_xml).map_err(SignInError::Provider)?;
    let sp = endpoints.service_provider(&idp);
    let expected = request_id.to_owned();
    // xmlsec's verification is CPU work: off the request thread.
    let verified = tokio::task::spawn_blocking(move || {
        sp.parse_xml_response(&xml, Some(&[expected.as_str()]))
            .map_err(|e| refusal(&e))
    })
    .await
    .map_err(|_| Refusal::Malformed)??;
    accept(settings, endpoints, verified)
}

/// Reads the person out of a verified assertion, after the checks samael leaves to us.
fn accept(
    settings: &SamlSettings,
    endpoints: &Endpoints,
    assertion: Assertion,
) -> Result<Accepted, SignInError> {
    // Web Browser SSO profile (SAML Profiles 4.1.4.2): the assertion must name its audience.
    let conditions = assertion
        .conditions
        .as_ref()
        .ok_or(Refusal::WrongAudience)?;
    let audience_ok = conditions
        .audience_restrictions
        .iter()
        .flatten()
        .any(|r| r.audience.contains(&endpoints.entity_id));
    if !audience_ok {
        return Err(Refusal::WrongAudience.into());
    }
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .filter(|n| !n.value.trim().is_empty() && n.value.len() <= 255)
        .ok_or(Refusal::Malformed)?;
    if name_id.format.as_deref() == Some(TRANSIENT_NAME_ID) {
        // A transient NameID names a different person at every login.
        return Err(Refusal::TransientSubject.into());
    }
    let mut claims = attributes(&assertion);
    let email = claims.get(&settings.email_attribute).cloned().or_else(|| {
        (name_id.format.as_deref() == Some(EMAIL_NAME_ID))
            .then(|| Value::String(name_id.value.clone()))
    });
    if let Some(email) = email {
        claims.insert("email".into(), first(email));
    }
    if let Some(name) = claims.get(&settings.name_attribute).cloned() {
        claims.insert("name".into(), first(name));
    }
    let authenticated_at = assertion
        .authn_statements
        .iter()
        .flatten()
        .find_map(|s| s.authn_instant)
        .unwrap_or_else(Utc::now);
    let confirmed_until = assertion
        .subject
        .iter()
        .flat_map(|s| s.subject_confirmations.iter().flatten())
        .filter_map(|c| c.subject_confirmation_data.as_ref()?.not_on_or_after)
        .max();
    let valid_until = [conditions.not_on_or_after, confirmed_until]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_else(|| assertion.issue_instant + MAX_ISSUE_DELAY)
        + SKEW;
    Ok(Accepted {
        vouched: Vouched::new(name_id.value.trim().to_owned(), claims, authenticated_at),
        assertion_id: assertion.id,
        valid_until,
    })
}

/// The assertion's attributes as claims, by `Name` (and by `FriendlyName` when that is not
/// also a `Name`): one value as text, several as a list.
fn attributes(assertion: &Assertion) -> Map<String, Value> {
    let mut claims = Map::new();
    let all = assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| s.attributes.iter())
        .take(MAX_ATTRIBUTES);
    for attribute in all {
        let mut values: Vec<Value> = attribute
            .values
            .iter()
            .filter_map(|v| v.value.clone())
            .take(MAX_VALUES)
            .map(Value::String)
            .collect();
        let value = if values.len() == 1 {
            values.remove(0)
        } else {
            Value::Array(values)
        };
        for name in [&attribute.name, &attribute.friendly_name]
            .into_iter()
            .flatten()
        {
            claims.entry(name.clone()).or_insert_with(|| value.clone());
        }
    }
    claims
}

/// The first value of a possibly many-valued attribute.
fn first(value: Value) -> Value {
    match value {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    }
}

/// The reason samael's refusal is recorded under.
fn refusal(error: &SamlError) -> Refusal {
    match error {
        SamlError::FailedToValidateSignature => Refusal::BadSignature,
        SamlError::AssertionExpired { .. }
        | SamlError::ResponseExpired { .. }
        | SamlError::AssertionConditionExpired { .. }
        | SamlError::AssertionConditionExpiredBefore { .. }
        | SamlError::AssertionSubjectConfirmationExpired { .. }
        | SamlError::AssertionSubjectConfirmationExpiredBefore { .. } => Refusal::Expired,
        SamlError::AssertionIssuerMismatch { .. } | SamlError::ResponseIssuerMismatch { .. } => {
            Refusal::WrongIssuer
        }
        SamlError::AssertionConditionAudienceRestrictionFailed { .. } => Refusal::WrongAudience,
        SamlError::AssertionRecipientMismatch { .. }
        | SamlError::DestinationValidationError { .. } => Refusal::WrongRecipient,
        SamlError::AssertionInResponseToInvalid { .. }
        | SamlError::ResponseInResponseToInvalid { .. } => Refusal::Unsolicited,
        SamlError::ResponseBadStatusCode { code } => {
            let status = code.rsplit(':').next().unwrap_or_default();
            Refusal::ProviderError(
                status
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(64)
                    .collect(),
            )
        }
        _ => Refusal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screening_bounds_depth_and_refuses_dtds() {
        assert_eq!(screen("<a><b/><Assertion/></a>").unwrap().assertions, 1);
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(screen(&deep).err(), Some("is nested too deeply"));
        // A billion laughs never reaches a parser that would expand it.
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><a>&lol2;</a>"#;
        assert_eq!(
            screen(laughs).err(),
            Some("must not have a document type declaration")
        );
        assert!(screen("<a><b></a>").is_err());
        assert!(screen(&"x".repeat(MAX_DOCUMENT + 1)).is_err());
        let wrapped = "<p:Response xmlns:p='p' xmlns:s='s'><s:Assertion><s:Assertion/></s:Assertion><s:EncryptedAssertion/></p:Response>";
        assert_eq!(screen(wrapped).unwrap().assertions, 3);
    }

    #[test]
    fn metadata_without_a_signing_certificate_is_refused() {
        let xml = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example.com">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#;
        assert_eq!(
            IdpMetadata::read(xml).err().as_deref(),
            Some("the provider publishes no signing certificate")
        );
        assert!(IdpMetadata::read("<not-metadata/>").is_err());
    }
}
