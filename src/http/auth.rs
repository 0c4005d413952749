//! `/api/auth/…`: account endpoints. (Login, tokens and keys arrive with the
//! identity work; registration is here because it only needs storage.)

use actix_web::{web, HttpResponse};
use palaver_actors::password;
use palaver_storage::{NewUser, User};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::app::AppState;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/auth/register").post(register));
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// A user as the API shows it.
#[derive(Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub is_demo: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.to_string(),
            email: u.email.clone(),
            is_demo: u.is_demo,
        }
    }
}

/// A syntactic check, enough to catch typos and garbage: one `@`, something
/// on both sides, a dot in the domain, no spaces or control characters.
pub fn validate_email(email: &str) -> Result<(), ApiError> {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid("email: not a valid email address"))
    }
}

async fn register(
    state: web::Data<AppState>,
    body: web::Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.auth.allow_registration {
        return Err(ApiError::RegistrationClosed);
    }
    let Credentials { email, password } = body.into_inner();
    validate_email(&email)?;
    password::validate(&password).map_err(|e| ApiError::invalid(format!("password: {e}")))?;
    if state.store.users().find_by_email(&email)?.is_some() {
        return Err(ApiError::EmailTaken);
    }
    let hash = web::block(move || password::hash(&password))
        .await?
        .map_err(ApiError::internal)?;
    let user = state
        .store
        .users()
        .create(NewUser {
            email,
            password_hash: hash,
            is_demo: false,
            demo_expires_at: None,
        })
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(HttpResponse::Created().json(serde_json::json!({ "user": UserView::from(&user) })))
}

#[cfg(test)]
mod tests {
    use super::validate_email;

    #[test]
    fn email_validation() {
        for ok in ["a@b.co", "Ann.Lee+x@example.com", " pad@example.org "] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "no-at",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@com.",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
