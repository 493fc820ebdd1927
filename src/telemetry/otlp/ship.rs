//! One signal's way to the collector: a bounded queue that a request only ever puts a record
//! into, and a thread of its own that takes the records off it, encodes them in batches as OTLP
//! export requests (protobuf) and posts them.
//!
//! Records stay in the compact form their producer made (a finished span, an audit row); the
//! OTLP messages are built on the thread, so a request pays for a push under an uncontended lock
//! and nothing else: the thread is woken only when a batch is full, when a flush is asked, or by
//! its own timer (the batch delay), never once per record.
//! Invariants: at most [`QUEUE`] records wait (beyond it a record is dropped and counted), and
//! the thread holds at most what it last took; a batch holds at most the configured batch size;
//! a collector that is slow or down only delays this thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry_sdk::Resource;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::{Failures, export_request, resource_proto, scope, wire};

/// Records waiting for export, per signal; beyond it they are dropped.
pub const QUEUE: usize = 4096;

/// A kind of record exported in batches (spans, log records).
pub trait Signal: Send + Sized + 'static {
    /// The signal's name in metrics and log lines: `traces`, `logs`.
    const NAME: &'static str;

    /// About how many bytes one record takes, to size a batch's buffer.
    const RECORD_BYTES: usize;

    /// Writes the record as its OTLP message (a `Span`, a `LogRecord`), in field order.
    fn write(&self, out: &mut Vec<u8>);

    /// Encodes `batch` as one OTLP export request (protobuf), from `resource`: each record
    /// written in place ([`wire`]), the request framed around them ([`export_request`]).
    fn encode(batch: Vec<Self>, resource: &Resource) -> Vec<u8> {
        let mut records = Vec::with_capacity(batch.len() * Self::RECORD_BYTES);
        for record in &batch {
            wire::delimited(2, &mut records, |out| record.write(out));
        }
        let (resource, schema_url) = resource_proto(resource);
        export_request(&resource, &schema_url, &scope(), &records)
    }
}

/// Where and how often one signal is posted.
#[derive(Debug)]
pub struct Destination {
    /// The signal's full URL (`{base}/v1/traces`, …).
    pub url: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, then the signal's own (`…_TRACES_HEADERS`, …).
    pub headers: HeaderMap,
    /// The longest a record waits for its batch to fill.
    pub delay: Duration,
    /// The most records in one export request.
    pub max_batch: usize,
}

impl Destination {
    /// The destination of signal `name` (`TRACES`, `LOGS`) under `base`, with the batch
    /// settings of the variables prefixed `batch` (`OTEL_BSP`, `OTEL_BLRP`), defaulting to
    /// `delay` milliseconds.
    pub fn from_env(base: &str, path: &str, name: &str, batch: &str, delay: u64) -> Self {
        let number = |var: String, default: u64| {
            std::env::var(&var)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        let mut headers = HeaderMap::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS".to_owned(),
            format!("OTEL_EXPORTER_OTLP_{name}_HEADERS"),
        ] {
            if let Ok(value) = std::env::var(&var) {
                headers.extend(parse_headers(&var, &value));
            }
        }
        Destination {
            url: format!("{base}{path}"),
            headers,
            // At least a millisecond (0 would spin the thread), at most an hour.
            delay: Duration::from_millis(
                number(format!("{batch}_SCHEDULE_DELAY"), delay).clamp(1, 3_600_000),
            ),
            max_batch: number(format!("{batch}_MAX_EXPORT_BATCH_SIZE"), 512).clamp(1, QUEUE as u64)
                as usize,
        }
    }
}

/// Headers in the form of `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,…`, values percent-encoded).
/// An entry that is not a valid header is left out and named (never its value: it is often a
/// credential).
fn parse_headers(var: &str, value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (index, entry) in value.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let header = entry.split_once('=').and_then(|(key, value)| {
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .ok()?;
            let mut value = HeaderValue::try_from(value.as_ref()).ok()?;
            // Often a credential: never shown by `Debug`.
            value.set_sensitive(true);
            Some((HeaderName::try_from(key.trim()).ok()?, value))
        });
        match header {
            Some((key, value)) => {
                headers.insert(key, value);
            }
            None => tracing::warn!(
                variable = var,
                entry = index + 1,
                "an OTLP header entry is not `key=value` with a valid name and value; it is not sent"
            ),
        }
    }
    headers
}

/// The records waiting, shared by the producers and the thread.
struct Pending<R> {
    records: Vec<R>,
    /// Callers of [`Shipper::flush`] waiting for what was queued before them to be posted.
    flushes: Vec<SyncSender<()>>,
    /// The producing end is gone: post what is left and stop.
    closed: bool,
}

struct Shared<R> {
    pending: Mutex<Pending<R>>,
    /// Wakes the thread early: a batch is full, a flush was asked, or the shipper is gone.
    wake: Condvar,
    max_batch: usize,
}

impl<R> Shared<R> {
    fn lock(&self) -> MutexGuard<'_, Pending<R>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The producing end of one signal's queue.
pub struct Shipper<R> {
    shared: Arc<Shared<R>>,
    dropped: &'static AtomicU64,
}

impl<R: Signal> Shipper<R> {
    /// Starts the thread that posts to `destination` with `client`; drops are counted in
    /// `dropped`, failed exports in `failures`.
    pub fn start(
        destination: Destination,
        client: reqwest::blocking::Client,
        resource: Resource,
        dropped: &'static AtomicU64,
        failures: Failures,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                records: Vec::with_capacity(destination.max_batch),
                flushes: Vec::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            max_batch: destination.max_batch,
        });
        let post = Post {
            client,
            destination,
            resource,
            failures,
        };
        let thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("otlp-{}", R::NAME))
            .spawn(move || post.run(&thread))?;
        Ok(Shipper { shared, dropped })
    }

    /// Queues `record` for export, or drops and counts it when the queue is full. Never waits
    /// for the export, and wakes the thread only when a batch is full (not once per record).
    pub fn ship(&self, record: R) {
        self.ship_all(std::iter::once(record));
    }

    /// Queues `records` for export under one lock; those beyond the queue's room are dropped
    /// and counted. Wakes the thread only when they fill a batch.
    pub fn ship_all(&self, records: impl ExactSizeIterator<Item = R>) {
        let mut pending = self.shared.lock();
        let room = QUEUE.saturating_sub(pending.records.len());
        let dropped = records.len().saturating_sub(room);
        let before = pending.records.len();
        pending.records.extend(records.take(room));
        if before < self.shared.max_batch && pending.records.len() >= self.shared.max_batch {
            self.shared.wake.notify_one();
        }
        drop(pending);
        if dropped > 0 {
            self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// Posts what is queued, waiting at most `wait` for it.
    pub fn flush(&self, wait: Duration) {
        let (done, answered) = mpsc::sync_channel(1);
        self.shared.lock().flushes.push(done);
        self.shared.wake.notify_one();
        let _ = answered.recv_timeout(wait);
    }
}

impl<R> Drop for Shipper<R> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

/// The thread's end: batches records and posts them.
struct Post {
    client: reqwest::blocking::Client,
    destination: Destination,
    resource: Resource,
    failures: Failures,
}

impl Post {
    /// Takes what is queued when a batch is full, when the delay has passed, or when asked to
    /// flush, and posts it in batches; stops once the shipper is gone.
    fn run<R: Signal>(self, shared: &Shared<R>) {
        loop {
            let (records, flushes, closed) = {
                let mut pending = shared.lock();
                let deadline = Instant::now() + self.destination.delay;
                while pending.records.len() < shared.max_batch
                    && pending.flushes.is_empty()
                    && !pending.closed
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    pending = shared
                        .wake
                        .wait_timeout(pending, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                let records =
                    std::mem::replace(&mut pending.records, Vec::with_capacity(shared.max_batch));
                (
                    records,
                    std::mem::take(&mut pending.flushes),
                    pending.closed,
                )
            };
            let mut records = records.into_iter().peekable();
            while records.peek().is_some() {
                self.post(records.by_ref().take(shared.max_batch).collect());
            }
            for done in flushes {
                let _ = done.send(());
            }
            if closed {
                return;
            }
        }
    }

    /// Encodes and posts `batch`; a refusal or an unreachable collector is counted and logged
    /// (rarely), and the batch is gone.
    fn post<R: Signal>(&self, batch: Vec<R>) {
        if batch.is_empty() {
            return;
        }
        let body = R::encode(batch, &self.resource);
        let answer = self
            .client
            .post(&self.destination.url)
            .headers(self.destination.headers.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )
            .body(body)
            .send();
        match answer {
            Ok(answer) if answer.status().is_success() => {}
            Ok(answer) => self
                .failures
                .note(&format!("the collector answered {}", answer.status())),
            // What failed, without the URL (a collector's URL may carry a credential).
            Err(e) => self.failures.note(&e.without_url().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record that notes the size of each batch it is encoded in.
    struct Probe;

    static BATCHES: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

    impl Signal for Probe {
        const NAME: &'static str = "probe";
        const RECORD_BYTES: usize = 0;

        fn write(&self, _: &mut Vec<u8>) {}

        fn encode(batch: Vec<Self>, _: &Resource) -> Vec<u8> {
            BATCHES.lock().unwrap().push(batch.len());
            Vec::new()
        }
    }

    #[test]
    fn records_beyond_the_queue_are_dropped_and_counted_without_waiting() {
        static DROPPED: AtomicU64 = AtomicU64::new(0);
        // Nobody drains this queue: a collector that never answers.
        let shipper = Shipper::<Probe> {
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending {
                    records: Vec::new(),
                    flushes: Vec::new(),
                    closed: false,
                }),
                wake: Condvar::new(),
                max_batch: 512,
            }),
            dropped: &DROPPED,
        };
        for _ in 0..QUEUE + 2 {
            shipper.ship(Probe);
        }
        assert_eq!(DROPPED.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn batches_are_cut_at_their_size_and_posted_on_a_flush_and_failed_posts_are_counted() {
        static DROPPED: AtomicU64 = AtomicU64::new(0);
        static FAILED: AtomicU64 = AtomicU64::new(0);
        // A collector that is down: the port was free a moment ago, so connecting is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let shipper = Shipper::<Probe>::start(
            Destination {
                url: format!("http://127.0.0.1:{port}/v1/probe"),
                headers: HeaderMap::new(),
                delay: Duration::from_secs(600),
                max_batch: 3,
            },
            reqwest::blocking::Client::new(),
            Resource::builder_empty().build(),
            &DROPPED,
            Failures::new("probe", &FAILED),
        )
        .unwrap();
        for _ in 0..7 {
            shipper.ship(Probe);
        }
        shipper.flush(Duration::from_secs(30));
        let batches = BATCHES.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 7, "{batches:?}");
        assert!(batches.iter().all(|&b| (1..=3).contains(&b)), "{batches:?}");
        assert_eq!(
            FAILED.load(Ordering::Relaxed),
            batches.len() as u64,
            "each post failed"
        );
        assert_eq!(DROPPED.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn headers_are_read_as_the_specification_writes_them() {
        let headers = parse_headers(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "api-key=secret%20value, x-tenant = t1,broken,bad name=1,",
        );
        assert_eq!(headers["api-key"], "secret value");
        assert_eq!(headers["x-tenant"], "t1");
        assert_eq!(headers.len(), 2, "the malformed entries are left out");
    }
}
