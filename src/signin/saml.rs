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

use super::providers::{SamlSettings, is_secure_transport};
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
/// SAML responses verified at once, on this replica.
static VERIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// Clock skew allowed on the assertion's time bounds.
const SKEW: Duration = Duration::seconds(60);
/// Oldest `IssueInstant` accepted: an assertion is used within moments of being issued.
const MAX_ISSUE_DELAY: Duration = Duration::minutes(5);
/// Most attributes, and values per attribute, read from an assertion.
const MAX_ATTRIBUTES: usize = 256;
const MAX_VALUES: usize = 1000;
const EMAIL_NAME_ID: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
const TRANSIENT_NAME_ID: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// Most elements in a screened document, and children of one element.
const MAX_ELEMENTS: usize = 10_000;
const MAX_CHILDREN: usize = 1_000;
/// Most XML signatures in a response (the response's and the assertion's).
const MAX_SIGNATURES: usize = 2;
/// The transforms and canonicalizations a response's signatures may use: the ones SAML
/// prescribes (SAML Core 5.4.3, 5.4.4), none that fetches, runs or selects anything.
const ALLOWED_TRANSFORMS: [&[u8]; 5] = [
    b"http://www.w3.org/2000/09/xmldsig#enveloped-signature",
    b"http://www.w3.org/2001/10/xml-exc-c14n#",
    b"http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
    b"http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    b"http://www.w3.org/2006/12/xml-c14n11",
];

/// What is screened: an IdP's metadata (read by a serde parser only) or a response (also given
/// to xmlsec, and so screened harder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    Metadata,
    Response,
}

/// What a screened document holds.
struct Screened {
    /// `Assertion` and `EncryptedAssertion` elements, at any depth.
    assertions: usize,
}

/// Reads `xml` once as a stream, without building anything, and refuses what no parser after
/// it should see: documents larger than [`MAX_DOCUMENT`], deeper than [`MAX_DEPTH`], wider
/// than [`MAX_ELEMENTS`] / [`MAX_CHILDREN`], with a DTD, in an encoding other than UTF-8 (so that
/// libxml2 reads the very text screened here), or not well-formed. A response may moreover
/// hold no comment, CDATA section or processing instruction (they make samael's matching of
/// signed content backtrack), and its signatures may only reference elements of the document
/// (`URI=""` or `#id`: no file, no URL), with one reference each, through the transforms SAML
/// prescribes, and without `Object`, `Manifest` or `RetrievalMethod`: xmlsec computes reference
/// digests before it checks a signature, so none of that may reach it.
fn screen(xml: &str, document: Document) -> Result<Screened, &'static str> {
    if xml.len() > MAX_DOCUMENT {
        return Err("is larger than 256 KiB");
    }
    let response = document == Document::Response;
    let mut reader = quick_xml::Reader::from_str(xml);
    // Children counted per open element.
    let mut open: Vec<usize> = Vec::new();
    let (mut elements, mut assertions, mut signatures, mut references) = (0usize, 0, 0, 0);
    loop {
        let (element, empty) = match reader.read_event() {
            Ok(Event::Start(element)) => (element, false),
            Ok(Event::Empty(element)) => (element, true),
            Ok(Event::End(_)) => {
                open.pop();
                continue;
            }
            Ok(Event::DocType(_)) => return Err("must not have a document type declaration"),
            Ok(Event::Decl(declaration)) => {
                let utf8 = declaration.encoding().is_none_or(|encoding| {
                    encoding.is_ok_and(|e| e.eq_ignore_ascii_case(b"utf-8"))
                });
                if !utf8 {
                    return Err("must be encoded in UTF-8");
                }
                continue;
            }
            Ok(Event::Comment(_) | Event::CData(_) | Event::PI(_)) if response => {
                return Err("must hold no comment, CDATA section or processing instruction");
            }
            Ok(Event::Eof) => break,
            Ok(_) => continue,
            Err(_) => return Err("is not well-formed XML"),
        };
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err("has too many elements");
        }
        if let Some(children) = open.last_mut() {
            *children += 1;
            if *children > MAX_CHILDREN {
                return Err("has an element with too many children");
            }
        }
        if !empty {
            open.push(0);
            if open.len() > MAX_DEPTH {
                return Err("is nested too deeply");
            }
        }
        let attribute = |name: &[u8]| {
            element
                .try_get_attribute(name)
                .ok()
                .flatten()
                .map(|a| a.value.into_owned())
        };
        match element.local_name().as_ref() {
            b"Assertion" | b"EncryptedAssertion" => assertions += 1,
            b"Signature" if response => {
                signatures += 1;
                if signatures > MAX_SIGNATURES {
                    return Err("has too many signatures");
                }
            }
            b"Reference" if response => {
                references += 1;
                let local = attribute(b"URI").is_some_and(|uri| is_local_reference(&uri));
                if references > signatures || !local {
                    return Err(
                        "has a signature reference that is not one element of the document",
                    );
                }
            }
            b"Transform" | b"CanonicalizationMethod" if response => {
                let allowed = attribute(b"Algorithm")
                    .is_some_and(|algorithm| ALLOWED_TRANSFORMS.contains(&algorithm.as_slice()));
                if !allowed {
                    return Err("has a signature transform SAML does not use");
                }
            }
            b"Object" | b"Manifest" | b"RetrievalMethod" if response => {
                return Err("has a signature part SAML does not use");
            }
            _ => {}
        }
    }
    Ok(Screened { assertions })
}

/// `URI=""` (the whole document) or `#` and an XML name: a reference to an element of the
/// signed document itself.
fn is_local_reference(uri: &[u8]) -> bool {
    match uri.split_first() {
        None => true,
        Some((b'#', id)) => {
            !id.is_empty()
                && id
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        }
        Some(_) => false,
    }
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
        screen(xml, Document::Metadata).map_err(|why| format!("the metadata {why}"))?;
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
            .filter(is_secure_transport)
            .ok_or(
                "the SingleSignOnService location is not an https URL (http only on loopback)",
            )?;
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
    // Some providers wrap their base64 in lines.
    let encoded: Vec<u8> = encoded
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if encoded.len() > MAX_DOCUMENT.div_ceil(3) * 4 {
        return Err(Refusal::Structure.into());
    }
    let bytes = STANDARD.decode(encoded).map_err(|_| Refusal::Malformed)?;
    let xml = String::from_utf8(bytes).map_err(|_| Refusal::Malformed)?;
    let screened = screen(&xml, Document::Response).map_err(|why| {
        tracing::info!(why, "a SAML response was refused by the screen");
        Refusal::Structure
    })?;
    if screened.assertions != 1 {
        return Err(Refusal::Structure.into());
    }
    let idp = IdpMetadata::read(&settings.metadata_xml).map_err(SignInError::Provider)?;
    let sp = endpoints.service_provider(&idp);
    let expected = request_id.to_owned();
    // xmlsec's verification is CPU work: off the request thread, and a bounded number at once,
    // so that no tenant's provider can occupy every blocking thread.
    let _permit = VERIFYING
        .acquire()
        .await
        .map_err(|_| SignInError::Unexpected(anyhow::anyhow!("the verifier is closed")))?;
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
    // The Web Browser SSO profile requires an AuthnStatement: without one, nothing says the
    // person authenticated at all (nor when).
    let authenticated_at = assertion
        .authn_statements
        .iter()
        .flatten()
        .find_map(|s| s.authn_instant)
        .ok_or(Refusal::Malformed)?;
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
    let methods = assertion
        .authn_statements
        .iter()
        .flatten()
        .filter_map(|s| s.authn_context.as_ref()?.value.as_ref()?.value.clone())
        .map(|class| class.trim().to_owned())
        .collect();
    Ok(Accepted {
        vouched: Vouched::new(
            name_id.value.trim().to_owned(),
            claims,
            authenticated_at,
            methods,
        ),
        assertion_id: assertion.id,
        valid_until,
    })
}

/// The assertion's attributes as claims, by `Name`, and by `FriendlyName` where no attribute
/// has that `Name`: one value as text, several as a list.
fn attributes(assertion: &Assertion) -> Map<String, Value> {
    let all: Vec<_> = assertion
        .attribute_statements
        .iter()
        .flatten()
        .flat_map(|s| s.attributes.iter())
        .take(MAX_ATTRIBUTES)
        .collect();
    let value = |attribute: &samael::attribute::Attribute| {
        let mut values: Vec<Value> = attribute
            .values
            .iter()
            .filter_map(|v| v.value.clone())
            .take(MAX_VALUES)
            .map(Value::String)
            .collect();
        if values.len() == 1 {
            values.remove(0)
        } else {
            Value::Array(values)
        }
    };
    let mut claims = Map::new();
    for attribute in &all {
        if let Some(name) = &attribute.name {
            claims
                .entry(name.clone())
                .or_insert_with(|| value(attribute));
        }
    }
    for attribute in &all {
        if let Some(name) = &attribute.friendly_name {
            claims
                .entry(name.clone())
                .or_insert_with(|| value(attribute));
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
        let screen = |xml: &str| screen(xml, Document::Response);
        assert_eq!(screen("<a><b/><Assertion/></a>").unwrap().assertions, 1);
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(screen(&deep).err(), Some("is nested too deeply"));
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_CHILDREN + 1));
        assert_eq!(
            screen(&wide).err(),
            Some("has an element with too many children")
        );
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
        // UTF-7 would let libxml2 read a document this screen never saw.
        let utf7 = "<?xml version=\"1.0\" encoding=\"UTF-7\"?><a/>";
        assert_eq!(screen(utf7).err(), Some("must be encoded in UTF-8"));
        assert!(screen("<?xml version=\"1.0\" encoding=\"utf-8\"?><a/>").is_ok());
        // Comments are refused in responses (they split signed text), kept in metadata.
        assert!(screen("<a><!-- x --></a>").is_err());
        assert!(super::screen("<a><!-- x --></a>", Document::Metadata).is_ok());
    }

    #[test]
    fn signatures_may_reference_only_the_document_through_saml_transforms() {
        let signed = |reference: &str, transform: &str| {
            format!(
                "<r><ds:Signature xmlns:ds='d'><ds:SignedInfo>\
                 <ds:CanonicalizationMethod Algorithm='http://www.w3.org/2001/10/xml-exc-c14n#'/>\
                 <ds:Reference {reference}><ds:Transforms><ds:Transform Algorithm='{transform}'/>\
                 </ds:Transforms></ds:Reference></ds:SignedInfo></ds:Signature></r>"
            )
        };
        let enveloped = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
        let screen = |xml: String| screen(&xml, Document::Response).map(|_| ());
        assert!(screen(signed("URI='#_a1-b.c'", enveloped)).is_ok());
        assert!(screen(signed("URI=''", enveloped)).is_ok());
        for reference in [
            "URI='file:///dev/zero'",
            "URI='http://169.254.169.254/latest'",
            "URI='#a b'",
            "",
        ] {
            assert!(screen(signed(reference, enveloped)).is_err(), "{reference}");
        }
        for transform in [
            "http://www.w3.org/TR/1999/REC-xslt-19991116",
            "http://www.w3.org/TR/1999/REC-xpath-19991116",
            "http://www.w3.org/2002/06/xmldsig-filter2",
        ] {
            assert!(screen(signed("URI=''", transform)).is_err(), "{transform}");
        }
        let two_references = signed("URI=''", enveloped).replace(
            "</ds:SignedInfo>",
            "<ds:Reference URI='#x'/></ds:SignedInfo>",
        );
        assert!(screen(two_references).is_err());
        let manifest = signed("URI=''", enveloped).replace(
            "</ds:Signature>",
            "<ds:Object><ds:Manifest/></ds:Object></ds:Signature>",
        );
        assert!(screen(manifest).is_err());
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
