//! Operator commands: `palaver user …` and `palaver config …`. They open the
//! database directly, so they run while the server is stopped (sled allows
//! one process); when the server holds the lock they say so plainly.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use palaver_actors::password;
use palaver_storage::{ExternalIdentity, NewUser, StorageError, Store, User};

use crate::config::Config;
use palaver_actors::protocol::rfc3339_millis;

/// Opens the store named by the config, turning a held lock into a plain
/// sentence (the error's own text says it).
pub fn open_store(config: &Config) -> Result<Store> {
    open(config, None)
}

/// Opens the store for the server: like [`open_store`], with every flush
/// timed into `palaver_storage_flush_seconds`.
pub fn open_store_observed(config: &Config) -> Result<Store> {
    open(
        config,
        Some(Box::new(palaver_actors::telemetry::storage_flush)),
    )
}

fn open(
    config: &Config,
    observer: Option<palaver_storage::committer::FlushObserver>,
) -> Result<Store> {
    match Store::open_with(&config.store_config(), observer) {
        Ok(store) => Ok(store),
        Err(e @ StorageError::Locked { .. }) => bail!("{e}"),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot open the database in {}",
                config.data_dir().display()
            )
        }),
    }
}

/// Reads the new user's password: one line of stdin with `--password-stdin`,
/// else a no-echo prompt (twice) when stdin is a terminal.
pub fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        bail!("stdin is not a terminal: pass --password-stdin and pipe the password in");
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Repeat password: ")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

pub async fn user_add(store: &Store, email: &str, password: String) -> Result<User> {
    crate::http::auth::validate_email(email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = tokio::task::spawn_blocking(move || password::hash(&password)).await??;
    let user = store
        .users()
        .create(NewUser {
            email: email.to_owned(),
            password_hash: hash,
            is_demo: false,
            demo_expires_at: None,
        })
        .await
        .map_err(|e| match e {
            StorageError::EmailTaken => anyhow::anyhow!("a user with email {email} already exists"),
            other => other.into(),
        })?;
    Ok(user)
}

/// Every user: its id, its email (or, for a user from another issuer, the
/// `NAME:ID` that `--external` takes), its issuer (`auth.issuer` for
/// palaver's own users), and its state.
pub fn user_list(store: &Store, own_issuer: &str, out: &mut impl Write) -> Result<()> {
    let users = store.users().list()?;
    writeln!(
        out,
        "{:<36}  {:<32}  {:<16}  {:<8}  {:<4}  CREATED",
        "ID", "USER", "ISSUER", "ACTIVE", "DEMO"
    )?;
    for u in &users {
        let issuer = u.external.as_ref().map_or(own_issuer, |e| &e.issuer);
        writeln!(
            out,
            "{:<36}  {:<32}  {:<16}  {:<8}  {:<4}  {}",
            u.id,
            user_label(u),
            issuer,
            if u.is_active { "yes" } else { "no" },
            if u.is_demo { "yes" } else { "no" },
            rfc3339_millis(u.created_at),
        )?;
    }
    if users.is_empty() {
        writeln!(out, "(no users)")?;
    }
    Ok(())
}

/// How the operator names a user: its email, or `NAME:ID` for a user from
/// another issuer.
pub fn user_label(user: &User) -> String {
    match &user.external {
        Some(who) => who.to_string(),
        None => user.email.clone(),
    }
}

pub fn find_user(store: &Store, email: &str) -> Result<User> {
    store
        .users()
        .find_by_email(email)?
        .with_context(|| format!("no user with email {email}"))
}

/// The user named by `--email` or by `--external NAME:ID` (one of them).
pub fn find_user_by(store: &Store, email: Option<&str>, external: Option<&str>) -> Result<User> {
    match (email, external) {
        (Some(email), None) => find_user(store, email),
        (None, Some(external)) => {
            // The name never holds a colon; the id may.
            let Some((issuer, id)) = external
                .split_once(':')
                .filter(|(n, i)| !n.is_empty() && !i.is_empty())
            else {
                bail!("--external takes NAME:ID (an [[auth.external]] name and the user's id there), e.g. django:42");
            };
            let who = ExternalIdentity {
                issuer: issuer.to_owned(),
                id: id.to_owned(),
            };
            store
                .users()
                .find_by_external(&who)?
                .with_context(|| format!("no user {who} (see `palaver user list`)"))
        }
        _ => bail!("name the user with --email or with --external NAME:ID"),
    }
}

pub fn apikey_list(store: &Store, email: Option<&str>, out: &mut impl Write) -> Result<()> {
    let keys = match email {
        Some(email) => store.api_keys().list_for(find_user(store, email)?.id)?,
        None => store.api_keys().list_all()?,
    };
    writeln!(
        out,
        "{:<36}  {:<36}  {:<24}  {:<20}  LAST USED",
        "ID", "USER", "NAME", "CREATED"
    )?;
    for k in &keys {
        writeln!(
            out,
            "{:<36}  {:<36}  {:<24}  {:<20}  {}",
            k.id,
            k.user_id,
            k.name,
            rfc3339_millis(k.created_at),
            k.last_used_at
                .map(rfc3339_millis)
                .unwrap_or_else(|| "never".into()),
        )?;
    }
    if keys.is_empty() {
        writeln!(out, "(no API keys)")?;
    }
    Ok(())
}

/// An access token for a user, signed with the server's key.
pub fn token_mint(
    config: &Config,
    store: &Store,
    email: &str,
    ttl: std::time::Duration,
) -> Result<String> {
    let user = find_user(store, email)?;
    if !user.is_active {
        bail!("{email} is disabled");
    }
    let settings = config.auth_settings()?;
    let tokens = palaver_actors::auth::TokenService::new(
        &settings.keys,
        &settings.issuer,
        settings.audience.as_deref(),
        settings.leeway_seconds,
    )?;
    let (token, _exp) = palaver_actors::auth::mint_access(&tokens, &user, ttl)?;
    Ok(token)
}
