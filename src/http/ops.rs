//! Operations endpoints: `/health` (the process answers) and `/ready`
//! (storage accepts durable writes).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiError;
use crate::app::AppState;

/// How long `/ready` waits for a probe write to become durable. Disk stalls
/// of over a second happen under load; longer than this is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").get(health))
        .service(web::resource("/ready").get(ready));
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.store.check_writable()).await {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({"status": "ready"}))),
        Ok(Err(e)) => Err(ApiError::NotReady(e.to_string())),
        Err(_) => Err(ApiError::NotReady(
            "storage did not confirm a write in time".into(),
        )),
    }
}
