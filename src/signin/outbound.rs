//! Calls from Flowgate to identity providers (discovery, JWKS, token endpoints, SAML metadata):
//! the HTTP client that `openidconnect` is given.
//!
//! Invariants:
//! - A provider is reached only at a public address, or one in the operator's
//!   `FLOWGATE_IDP_PRIVATE_NETWORKS`: every name is resolved by [`Guarded`], which drops any
//!   other address, and an address written in the URL is checked the same way, so a tenant's
//!   provider URL cannot make Flowgate call into its own network (a metadata service, a
//!   database, an admin port).
//! - Redirects are never followed (a provider's answer comes from the URL it was configured or
//!   discovered with), every call has a deadline, and a body larger than [`MAX_BODY`] is refused
//!   before it is parsed: a provider cannot make Flowgate wait forever or parse without bound.
//! - Errors name the host and the failure, never a request body (which may hold a code or a
//!   client secret).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ipnet::IpNet;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::telemetry;

/// The longest answer read from a provider (discovery documents and key sets are a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest wait for one call.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("could not reach {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("the answer of {host} exceeds {MAX_BODY} bytes")]
    TooLarge { host: String },
    #[error("the request could not be built: {0}")]
    Request(String),
    #[error("{host} is not at an address identity providers may have")]
    Forbidden { host: String },
}

/// Address ranges that are not the public internet (RFC 6890 and its successors).
static NOT_PUBLIC: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
        "::/127",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|n| n.parse().ok())
    .collect()
});

/// Which addresses providers may be reached at: public ones, and the operator's networks.
#[derive(Clone)]
struct Reachable(Arc<Vec<IpNet>>);

impl Reachable {
    fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address is judged as the IPv4 address it is.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip)) || !NOT_PUBLIC.iter().any(|n| n.contains(&ip))
    }
}

/// The resolver of provider hosts: the system's, keeping only [`Reachable`] addresses.
struct Guarded(Reachable);

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let reachable = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| reachable.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(OutboundError::Forbidden { host }) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// An error and its causes, as one line (reqwest names only the outermost).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One exchange with a provider, as `openidconnect` awaits it.
type Exchange = BoxFuture<'static, Result<http::Response<Vec<u8>>, OutboundError>>;

/// The HTTP client for identity providers.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    reachable: Reachable,
}

impl Outbound {
    /// A client that reaches public addresses and those in `private_networks`.
    pub fn new(private_networks: Vec<IpNet>) -> anyhow::Result<Self> {
        let reachable = Reachable(Arc::new(private_networks));
        // No proxy from the environment (`HTTPS_PROXY`, `ALL_PROXY`): through one, the guarded
        // resolver would check only the proxy's name, and the proxy would reach any address.
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(Guarded(reachable.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Outbound { client, reachable })
    }

    /// Whether calls may reach `ip`: a public address, or one in the allowed private networks.
    pub fn may_reach(&self, ip: IpAddr) -> bool {
        self.reachable.allows(ip)
    }

    /// Sends `request` and reads at most [`MAX_BODY`] bytes of the answer.
    pub async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, OutboundError> {
        let (parts, body) = request.into_parts();
        let host = parts.uri.host().unwrap_or_default().to_owned();
        // An address in the URL is not resolved, so it is checked here.
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            && !self.reachable.allows(ip)
        {
            return Err(OutboundError::Forbidden { host });
        }
        let unreachable = |e: reqwest::Error| OutboundError::Unreachable {
            host: host.clone(),
            reason: causes(&e.without_url()),
        };
        // A client span (host and method only: URLs of providers can carry parameters), whose
        // trace the provider is told of.
        let span = telemetry::trace::child("http.client", SpanKind::Client, || {
            vec![
                KeyValue::new("http.request.method", parts.method.to_string()),
                KeyValue::new("server.address", host.clone()),
            ]
        });
        let mut request = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        if let Some(traceparent) = span.traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let sent = request.send().await;
        span.end(sent.as_ref().err().map(|_| "unreachable"));
        let mut response = sent.map_err(unreachable)?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(OutboundError::TooLarge { host });
        }
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(OutboundError::TooLarge { host });
            }
            body.extend_from_slice(&chunk);
        }
        answer
            .body(body)
            .map_err(|e| OutboundError::Request(e.to_string()))
    }

    /// GETs `url` and parses its JSON answer, which must be `200 OK`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, anyhow::Error> {
        let request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())?;
        let response = self.send(request).await?;
        if response.status() != http::StatusCode::OK {
            anyhow::bail!("{url} answered {}", response.status());
        }
        Ok(serde_json::from_slice(response.body())?)
    }

    /// GETs the XML document at `url`, which must answer `200 OK` with UTF-8 text.
    pub async fn get_xml(&self, url: &str) -> Result<String, anyhow::Error> {
        let request = http::Request::get(url)
            .header(
                http::header::ACCEPT,
                "application/samlmetadata+xml, application/xml, text/xml",
            )
            .body(Vec::new())?;
        let response = self.send(request).await?;
        if response.status() != http::StatusCode::OK {
            anyhow::bail!("{url} answered {}", response.status());
        }
        Ok(String::from_utf8(response.into_body())?)
    }

    /// The client in the shape `openidconnect` calls.
    pub fn for_oidc(&self) -> impl Fn(http::Request<Vec<u8>>) -> Exchange {
        let this = self.clone();
        move |request| {
            let this = this.clone();
            Box::pin(async move { this.send(request).await })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_reached_at_public_addresses_and_the_operators_networks() {
        let public_only = Reachable(Arc::new(Vec::new()));
        for ip in ["8.8.8.8", "2606:4700::1111", "20.190.128.1"] {
            assert!(public_only.allows(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!public_only.allows(ip.parse().unwrap()), "{ip}");
        }
        let with_intranet = Reachable(Arc::new(vec!["10.20.0.0/16".parse().unwrap()]));
        assert!(with_intranet.allows("10.20.3.4".parse().unwrap()));
        assert!(!with_intranet.allows("10.21.3.4".parse().unwrap()));
    }

    #[tokio::test]
    async fn an_address_outside_them_is_refused_before_any_connection() {
        let outbound = Outbound::new(Vec::new()).unwrap();
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://localhost:9/x",
        ] {
            let request = http::Request::get(url).body(Vec::new()).unwrap();
            let refused = outbound.send(request).await.unwrap_err();
            assert!(
                matches!(refused, OutboundError::Forbidden { .. })
                    || refused.to_string().contains("not at an address"),
                "{url}: {refused}"
            );
        }
    }
}
