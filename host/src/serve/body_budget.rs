//! The node-wide budget for request bodies in flight (`[server]
//! max_request_bytes_in_flight`): each request is charged its declared body size (a
//! body of unknown length, i.e. chunked, is charged the largest body the API takes)
//! before anything reads it, and gives it back when its response is ready. A request
//! that does not fit is answered 503 with `Retry-After` at once, its body unread, so
//! many large submissions at once cannot take the host's memory: what the API holds
//! of request bodies is bounded by the budget whatever the number of clients.

use super::error::ApiError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget units are KiB, so that the largest budget fits the semaphore's `u32` takes.
const UNIT: u64 = 1024;

/// Seconds a client told 503 is asked to wait: bodies in flight are read and
/// answered within seconds, so the budget frees up quickly.
const RETRY_AFTER_SECS: u32 = 1;

/// Request body bytes that may be held at once.
#[derive(Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    pub(super) total_bytes: u64,
    /// What a body of unknown length is charged (the largest body any route reads);
    /// a reload of `[limits]` changes it.
    largest_bytes: AtomicU64,
}

impl BodyBudget {
    pub fn new(total_bytes: u64, largest_bytes: u64) -> BodyBudget {
        let units = total_bytes
            .div_ceil(UNIT)
            .min(Semaphore::MAX_PERMITS as u64) as usize;
        BodyBudget {
            units: Arc::new(Semaphore::new(units)),
            total_bytes,
            largest_bytes: AtomicU64::new(largest_bytes),
        }
    }

    /// What a body with this size hint is charged, in bytes: its exact length when
    /// known (no more than the largest body, which every route refuses past), else
    /// the largest.
    pub(super) fn charge(&self, exact: Option<u64>) -> u64 {
        let largest = self.largest_bytes.load(Ordering::Relaxed);
        exact.unwrap_or(largest).min(largest)
    }

    /// The largest body any route now reads, after a reload changed `[limits]`.
    pub fn set_largest(&self, bytes: u64) {
        self.largest_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Takes `bytes` from the budget, or `None` when they are not all free now.
    pub(super) fn take(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        self.units.clone().try_acquire_many_owned(units).ok()
    }

    /// The 503 a request that does not fit gets.
    pub(super) fn busy(&self, bytes: u64) -> Response {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "this node is holding as many request bodies as server.max_request_bytes_in_flight \
                 allows ({} bytes); this request's {bytes} bytes do not fit now, try again",
                self.total_bytes
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_charged_their_length_and_unknown_ones_the_largest() {
        let b = BodyBudget::new(10 * UNIT, 4 * UNIT);
        assert_eq!(b.charge(Some(100)), 100);
        assert_eq!(b.charge(Some(100 * UNIT)), 4 * UNIT);
        assert_eq!(b.charge(None), 4 * UNIT);
        let first = b.take(4 * UNIT).expect("fits");
        let second = b.take(4 * UNIT + 1).expect("fits: 9 of 10 units");
        assert!(b.take(2 * UNIT).is_none(), "only one unit is left");
        drop(first);
        assert!(b.take(2 * UNIT).is_some(), "given back");
        drop(second);
    }

    #[test]
    fn the_refusal_names_the_limit_and_says_when_to_retry() {
        let r = BodyBudget::new(8 * UNIT, UNIT).busy(5000);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
