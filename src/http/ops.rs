//! Operations endpoints: `/health` (the process answers) and `/ready`
//! (storage accepts durable writes, probed at most once a second).

use std::future::Future;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use palaver_storage::StorageError;
use serde::Serialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use super::openapi::NotReady;
use super::ApiError;
use crate::app::AppState;

/// How long `/ready` waits for a probe write to become durable. Disk stalls
/// of over a second happen under load; longer than this is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a probe's verdict answers `/ready`: the probe is a durable
/// write, and `/ready` is unauthenticated, so callers must not be able to
/// make the server write (and flush) once per request.
pub const READY_CACHE: Duration = Duration::from_secs(1);

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").get(health))
        .service(web::resource("/ready").get(ready));
}

/// `GET /health`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// palaver's version.
    pub version: &'static str,
    pub uptime_seconds: u64,
}

/// `GET /ready`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: &'static str,
}

/// The process answers.
#[utoipa::path(get, operation_id = "health", path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

/// Storage accepts durable writes (probed at most once a second).
#[utoipa::path(get, operation_id = "ready", path = "/ready", tag = "operations",
    responses((status = 200, description = "Ready", body = Ready), NotReady))]
async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = &state.store;
    state.ready.check(|| store.check_writable()).await?;
    Ok(HttpResponse::Ok().json(Ready { status: "ready" }))
}

/// The last readiness verdict, shared by every worker (it lives in
/// `AppState`). Callers that arrive while a probe runs wait for it and share
/// its verdict; for [`READY_CACHE`] after it, callers get it without a probe.
#[derive(Default)]
pub struct ReadyProbe {
    /// When the last probe finished, and whether storage passed it.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl ReadyProbe {
    /// Ready or 503 `not_ready`: the cached verdict if it is recent, else
    /// `probe`'s (run under the lock, so one probe at a time). What went
    /// wrong is logged here; the client learns only that storage is not
    /// ready (the detail may name paths, and `/ready` is public).
    pub async fn check<F>(&self, probe: impl FnOnce() -> F) -> Result<(), ApiError>
    where
        F: Future<Output = Result<(), StorageError>>,
    {
        let mut last = self.last.lock().await;
        let ready = match *last {
            Some((at, ready)) if at.elapsed() < READY_CACHE => ready,
            _ => {
                let ready = match tokio::time::timeout(READY_TIMEOUT, probe()).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "not ready: the storage probe failed");
                        false
                    }
                    Err(_) => {
                        tracing::error!(
                            timeout = ?READY_TIMEOUT,
                            "not ready: the storage probe was not durable in time"
                        );
                        false
                    }
                };
                *last = Some((Instant::now(), ready));
                ready
            }
        };
        if ready {
            Ok(())
        } else {
            Err(ApiError::NotReady("storage is not accepting writes".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use actix_web::ResponseError;

    use super::*;

    /// A probe that counts its runs and fails with an error naming a path.
    fn failing(runs: &AtomicUsize) -> impl Future<Output = Result<(), StorageError>> + '_ {
        runs.fetch_add(1, Ordering::SeqCst);
        async {
            Err(StorageError::Io(std::io::Error::other(
                "/srv/palaver/db/db: Input/output error",
            )))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_probe_and_the_verdict_is_kept_a_second() {
        let probe = Arc::new(ReadyProbe::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (probe, runs) = (probe.clone(), runs.clone());
                tokio::spawn(async move {
                    probe
                        .check(|| async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            // A slow disk: the others arrive meanwhile.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for caller in callers {
            assert!(caller.await.unwrap().is_ok());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // Within the second the verdict stands; after it, a new probe runs.
        tokio::time::advance(READY_CACHE - Duration::from_millis(1)).await;
        assert!(probe.check(|| failing(&runs)).await.is_ok());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(probe.check(|| failing(&runs)).await.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A failure is kept too.
        assert!(probe.check(|| failing(&runs)).await.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_storage_error_is_not_told_to_the_client() {
        let runs = AtomicUsize::new(0);
        let err = ReadyProbe::default()
            .check(|| failing(&runs))
            .await
            .expect_err("not ready");
        let response = err.error_response();
        assert_eq!(response.status(), 503);
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "not_ready");
        let message = body["error"].as_str().unwrap();
        assert!(
            !message.contains("/srv") && !message.contains("Input/output"),
            "{message}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_is_not_ready() {
        let outcome = ReadyProbe::default()
            .check(std::future::pending::<Result<(), StorageError>>)
            .await;
        assert!(outcome.is_err());
    }
}
