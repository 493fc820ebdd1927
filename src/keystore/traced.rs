//! Key-store calls as child spans of the request that makes them (`keystore.<operation>`, with
//! the backend and the key's purpose: never a name's tenant or item, never key material).
//! Calls outside a request, and every call when nothing is exported, cost a task-local lookup.

use std::future::Future;
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use super::{KeyName, KeyStore, KeyStoreError, SecretBytes};
use crate::telemetry::trace;

/// A key store whose every call is a child span of the current request.
pub struct Traced(Arc<dyn KeyStore>);

impl Traced {
    pub fn new(inner: Arc<dyn KeyStore>) -> Self {
        Traced(inner)
    }

    /// Runs `call` as the span `operation`; an `Err` marks the span failed with the error's kind.
    async fn span<T>(
        &self,
        operation: &'static str,
        name: Option<&KeyName>,
        call: impl Future<Output = Result<T, KeyStoreError>>,
    ) -> Result<T, KeyStoreError> {
        let backend = self.0.backend();
        // A remote store is a call out of the process; the local one is work within it.
        let kind = if backend == "local" {
            SpanKind::Internal
        } else {
            SpanKind::Client
        };
        let span = trace::child(operation, kind, || {
            let mut attributes = vec![KeyValue::new("flowgate.keystore.backend", backend)];
            if let Some(name) = name {
                attributes.push(KeyValue::new(
                    "flowgate.keystore.purpose",
                    name.purpose.as_str(),
                ));
            }
            attributes
        });
        let result = call.await;
        span.end(result.as_ref().err().map(|e| match e {
            KeyStoreError::Unavailable(_) => "unavailable",
            KeyStoreError::Unexpected(_) => "unexpected",
        }));
        result
    }
}

#[async_trait::async_trait]
impl KeyStore for Traced {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }

    async fn check(&self) -> Result<(), KeyStoreError> {
        self.span("keystore.check", None, self.0.check()).await
    }

    async fn secret(&self, name: &KeyName) -> Result<SecretBytes, KeyStoreError> {
        self.span("keystore.secret", Some(name), self.0.secret(name))
            .await
    }

    async fn sign(&self, name: &KeyName, message: &[u8]) -> Result<String, KeyStoreError> {
        self.span("keystore.sign", Some(name), self.0.sign(name, message))
            .await
    }

    async fn verify(
        &self,
        name: &KeyName,
        message: &[u8],
        signature: &str,
    ) -> Result<bool, KeyStoreError> {
        let call = self.0.verify(name, message, signature);
        self.span("keystore.verify", Some(name), call).await
    }

    async fn put_record(&self, name: &KeyName, value: &[u8]) -> Result<(), KeyStoreError> {
        let call = self.0.put_record(name, value);
        self.span("keystore.put_record", Some(name), call).await
    }

    async fn create_record(&self, name: &KeyName, value: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
        let call = self.0.create_record(name, value);
        self.span("keystore.create_record", Some(name), call).await
    }

    async fn record(&self, name: &KeyName) -> Result<Option<Vec<u8>>, KeyStoreError> {
        self.span("keystore.record", Some(name), self.0.record(name))
            .await
    }

    async fn delete_record(&self, name: &KeyName) -> Result<(), KeyStoreError> {
        let call = self.0.delete_record(name);
        self.span("keystore.delete_record", Some(name), call).await
    }

    async fn wrap(&self, name: &KeyName, plaintext: &[u8]) -> Result<String, KeyStoreError> {
        let call = self.0.wrap(name, plaintext);
        self.span("keystore.wrap", Some(name), call).await
    }

    async fn unwrap(
        &self,
        name: &KeyName,
        wrapped: &str,
    ) -> Result<Option<SecretBytes>, KeyStoreError> {
        let call = self.0.unwrap(name, wrapped);
        self.span("keystore.unwrap", Some(name), call).await
    }

    async fn rotate_wrapping_key(&self, name: &KeyName) -> Result<u32, KeyStoreError> {
        let call = self.0.rotate_wrapping_key(name);
        self.span("keystore.rotate_wrapping_key", Some(name), call)
            .await
    }

    async fn wrapping_version(&self, name: &KeyName) -> Result<Option<u32>, KeyStoreError> {
        let call = self.0.wrapping_version(name);
        self.span("keystore.wrapping_version", Some(name), call)
            .await
    }

    async fn rewrap(&self, name: &KeyName, wrapped: &str) -> Result<Option<String>, KeyStoreError> {
        let call = self.0.rewrap(name, wrapped);
        self.span("keystore.rewrap", Some(name), call).await
    }

    fn forget(&self, slug: &str) {
        self.0.forget(slug);
    }

    async fn destroy_tenant(&self, slug: &str) -> Result<(), KeyStoreError> {
        let call = self.0.destroy_tenant(slug);
        self.span("keystore.destroy_tenant", None, call).await
    }
}
