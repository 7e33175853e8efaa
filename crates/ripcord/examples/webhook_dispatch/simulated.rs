//! Simulated webhook endpoints, for the example and its test.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::dispatcher::{DeliveryError, SendFuture, Transport};

/// Endpoints that answer after `latency`, except those that are down: they
/// fail after `down_latency` (connection refused), until they recover.
pub(crate) struct Endpoints {
    pub(crate) latency: Duration,
    pub(crate) down_latency: Duration,
    /// Down endpoints, and when each recovers (`None`: never).
    down: HashMap<String, Option<Instant>>,
    /// Every request received: endpoint and time.
    requests: Mutex<Vec<(String, Instant)>>,
}

impl Endpoints {
    pub(crate) fn new(latency: Duration, down_latency: Duration) -> Self {
        Endpoints {
            latency,
            down_latency,
            down: HashMap::new(),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Takes `endpoint` down until `recovers` (or for good).
    pub(crate) fn down(mut self, endpoint: &str, recovers: Option<Instant>) -> Self {
        self.down.insert(endpoint.to_string(), recovers);
        self
    }

    /// The times at which `endpoint` received a request.
    pub(crate) fn requests_to(&self, endpoint: &str) -> Vec<Instant> {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests
            .iter()
            .filter(|(e, _)| e == endpoint)
            .map(|(_, t)| *t)
            .collect()
    }
}

impl Transport for std::sync::Arc<Endpoints> {
    fn send(&self, endpoint: &str, _payload: &str) -> SendFuture {
        let now = Instant::now();
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((endpoint.to_string(), now));
        let down = match self.down.get(endpoint) {
            Some(None) => true,
            Some(Some(recovers)) => now < *recovers,
            None => false,
        };
        let (latency, result) = if down {
            (
                self.down_latency,
                Err(DeliveryError(format!("{endpoint}: connection refused"))),
            )
        } else {
            (self.latency, Ok(()))
        };
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            result
        })
    }
}
