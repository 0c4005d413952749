//! The Prometheus exposition: installs the recorder behind the `metrics`
//! facade (the one process-wide piece of state palaver has: the facade is
//! global by design), adds the standard `process_*` metrics, and renders a
//! scrape. `GET /metrics` is served on the main listener, or on `metrics.bind`
//! when set, behind `metrics.token` when set.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use palaver_actors::telemetry;
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::http::extract::bearer_token;
use crate::http::ApiError;

/// Buckets of every `_seconds` histogram: 0.5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const UPSTREAM_SECONDS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
const ROUNDS_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 8.0];

/// How often histogram samples are folded into their buckets between scrapes
/// (the exporter's own default when it runs the upkeep itself). The recorder
/// keeps every sample it was given (about 8.4 bytes each) until a scrape or an
/// upkeep folds them in: a server nobody scrapes grew by about 56 bytes per
/// reply, 1.4 MiB a minute at 400 replies/s, without bound.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    token: Option<Secret>,
}

impl Metrics {
    /// Installs the global recorder. Fails if one is installed already.
    pub fn install(token: Option<Secret>) -> anyhow::Result<Metrics> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
            // An upstream model may think for a minute before its first delta.
            .set_buckets_for_metric(
                Matcher::Full(telemetry::UPSTREAM_FIRST_DELTA.into()),
                UPSTREAM_SECONDS_BUCKETS,
            )?
            .set_buckets_for_metric(Matcher::Full(telemetry::TOOL_ROUNDS.into()), ROUNDS_BUCKETS)?
            .install_recorder()?;
        palaver_actors::telemetry::describe();
        let process = metrics_process::Collector::default();
        process.describe();
        Ok(Metrics {
            inner: Arc::new(Inner {
                handle,
                process,
                token,
            }),
        })
    }

    /// A recorder that is not installed: scrapes show only process metrics.
    /// For tests that run several servers in one process.
    pub fn detached() -> Metrics {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        Metrics {
            inner: Arc::new(Inner {
                handle,
                process: metrics_process::Collector::default(),
                token: None,
            }),
        }
    }

    /// Folds the histogram samples recorded since the last scrape or upkeep
    /// into their buckets every [`UPKEEP_EVERY`], for as long as it runs
    /// (spawned at start). `install_recorder` leaves this to its caller.
    pub async fn keep_up(self) {
        every(UPKEEP_EVERY, || self.inner.handle.run_upkeep()).await;
    }

    /// One scrape in the Prometheus text format.
    pub fn render(&self) -> String {
        self.inner.process.collect();
        self.inner.handle.run_upkeep();
        self.inner.handle.render()
    }

    /// Checks `Authorization: Bearer <metrics.token>` when a token is set.
    fn authorized(&self, req: &HttpRequest) -> bool {
        let Some(token) = &self.inner.token else {
            return true;
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
    }
}

/// Warns at start when anyone who reaches the server can scrape it:
/// `/metrics` served without `metrics.token` on `serving` (the address of
/// `metrics.bind`, else of the main listener), which is not a loopback
/// address. The warning names the address and the settings, nothing else.
pub fn warn_if_public(token_set: bool, serving: SocketAddr) {
    if is_public(token_set, serving) {
        tracing::warn!(
            addr = %serving,
            "GET /metrics is public: it is served without metrics.token on an address that is \
             not loopback; set metrics.token, or metrics.bind to a loopback address"
        );
    }
}

/// Runs `work` every `period` (the first time after one period), for ever;
/// a late tick delays the next ones rather than running twice.
async fn every(period: Duration, mut work: impl FnMut()) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        work();
    }
}

fn is_public(token_set: bool, serving: SocketAddr) -> bool {
    !token_set && !serving.ip().to_canonical().is_loopback()
}

/// `GET /metrics`, for whichever listener serves it.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").get(scrape));
}

async fn scrape(metrics: web::Data<Metrics>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if !metrics.authorized(&req) {
        return Err(ApiError::Unauthorized {
            code: crate::http::error::ErrorCode::TokenInvalid,
            message: "a valid metrics token is required".into(),
        });
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render()))
}

/// Serves `/metrics` alone on its own listener (`metrics.bind`).
pub fn serve_separately(
    listener: TcpListener,
    metrics: Metrics,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(metrics);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(config)
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::NotFound)
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{every, is_public};

    // Paused time: the runtime's clock jumps to the next timer, so the count
    // is exact and the test takes no real time.
    #[tokio::test(start_paused = true)]
    async fn every_runs_the_work_once_per_period() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let task = tokio::spawn(every(Duration::from_secs(5), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        tokio::time::sleep(Duration::from_millis(4_999)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "not before the first period"
        );
        tokio::time::sleep(Duration::from_millis(16_000 - 4_999)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "at 5, 10 and 15 s");
        task.abort();
    }

    #[test]
    fn public_means_no_token_and_not_loopback() {
        let addr = |s: &str| s.parse().unwrap();
        assert!(is_public(false, addr("0.0.0.0:8080")));
        assert!(is_public(false, addr("[::]:8080")));
        assert!(is_public(false, addr("192.0.2.7:8080")));
        assert!(!is_public(true, addr("0.0.0.0:8080")));
        assert!(!is_public(false, addr("127.0.0.1:8080")));
        assert!(!is_public(false, addr("127.0.0.2:9090")));
        assert!(!is_public(false, addr("[::1]:8080")));
        assert!(!is_public(false, addr("[::ffff:127.0.0.1]:8080")));
    }
}
