//! Extractor configuration: how a JSON body that cannot be read becomes the
//! contract's error (413, 415, or 400 naming the field).

use actix_web::error::JsonPayloadError;
use actix_web::web;

use super::ApiError;

/// `web::Json` limits and error mapping for the whole app.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _req| {
            let api = match err {
                JsonPayloadError::Overflow { limit }
                | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                    ApiError::PayloadTooLarge { limit }
                }
                JsonPayloadError::ContentType => {
                    ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
                }
                JsonPayloadError::Deserialize(e) if e.is_data() => {
                    ApiError::invalid(format!("invalid field: {e}"))
                }
                JsonPayloadError::Deserialize(e) => {
                    ApiError::invalid(format!("malformed JSON: {e}"))
                }
                other => ApiError::invalid(other.to_string()),
            };
            api.into()
        })
}
