//! The `palaver` binary: parse the command line, load the configuration,
//! then either serve or run an operator command.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use palaver::app::{self, AppState};
use palaver::cli;
use palaver::config::{Config, Overrides};
use palaver::metrics::Metrics;

#[derive(Parser)]
#[command(
    name = "palaver",
    version,
    about = "A self-hosted realtime chat server"
)]
struct Cli {
    /// Configuration file (default: ./config.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides server.bind).
    #[arg(long, global = true, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Data directory (overrides storage.path).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage users (stop the server first).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys (stop the server first).
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Mint tokens for operators.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the OpenAPI document of the REST API (what /api/openapi.json
    /// serves; `palaver openapi > docs/openapi.json` refreshes the snapshot).
    Openapi,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key for a user; the key is printed once.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    /// List keys (of one user with --email).
    List {
        #[arg(long)]
        email: Option<String>,
    },
    /// Delete a key by id.
    Revoke { id: uuid::Uuid },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print an access token for a user.
    Mint {
        #[arg(long)]
        email: String,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prompts for the password on a terminal.
    Add {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List every user (with its issuer: palaver, or an [[auth.external]] name).
    List,
    /// Disable a user: they can no longer log in.
    Disable {
        #[command(flatten)]
        who: Who,
    },
    /// Enable a disabled user.
    Enable {
        #[command(flatten)]
        who: Who,
    },
    /// Delete a user and everything it owns.
    Delete {
        #[command(flatten)]
        who: Who,
    },
}

/// A user named by email, or by another issuer's name for it.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Who {
    #[arg(long)]
    email: Option<String>,
    /// A user from another issuer: its [[auth.external]] name and the id
    /// its tokens give (`user list` shows it), e.g. django:42.
    #[arg(long, value_name = "NAME:ID")]
    external: Option<String>,
}

impl Who {
    fn find(&self, store: &palaver_storage::Store) -> Result<palaver_storage::User> {
        cli::find_user_by(store, self.email.as_deref(), self.external.as_deref())
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Show,
    /// Validate the configuration and exit.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no configuration: the document is the same for every server.
    if let Some(Command::Openapi) = cli.command {
        print!("{}", palaver::http::openapi::document_json());
        return ExitCode::SUCCESS;
    }
    let overrides = Overrides {
        config_file: cli.config.clone(),
        bind: cli.bind,
        data: cli.data.clone(),
    };
    let config = match Config::load(&overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("palaver: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = actix_rt::System::new().block_on(dispatch(cli.command, config));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palaver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Option<Command>, config: Config) -> Result<()> {
    match command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::User(cmd) => user(cmd, &config).await,
        Command::Apikey(cmd) => apikey(cmd, &config).await,
        Command::Token(TokenCommand::Mint { email, ttl }) => {
            let store = cli::open_store(&config)?;
            let token = cli::token_mint(&config, &store, &email, ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            println!("configuration OK");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", palaver::http::openapi::document_json());
            Ok(())
        }
    }
}

async fn serve(config: Config) -> Result<()> {
    palaver::logging::init(&config.logging);
    raise_open_files_limit();
    let metrics = Metrics::install(config.metrics.token.clone())?;
    // Histogram samples stay in memory until folded into their buckets.
    actix_rt::spawn(metrics.clone().keep_up());
    let store = cli::open_store_observed(&config)?;
    let listener = palaver::http::server::bind(config.server.bind)
        .with_context(|| format!("cannot listen on {}", config.server.bind))?;
    let addr = listener.local_addr()?;
    let users = store.users().count();
    let metrics_listener = match config.metrics.bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} (metrics.bind)"))?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => listener.local_addr()?,
        None => addr,
    };
    palaver::metrics::warn_if_public(config.metrics.token.is_some(), metrics_addr);
    let state = AppState::start(config, store, metrics.clone())?;
    let shutdown = shutdown_signal()?;

    if let Some(listener) = metrics_listener {
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        actix_rt::spawn(palaver::metrics::serve_separately(listener, metrics)?);
    }
    println!(
        "palaver {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    if users == 0 {
        println!(
            "No users yet: press \"Try demo\" on the page, or stop the server and create one with\n  \
             cargo run --release -- user add --email you@example.com"
        );
    }
    tracing::info!(%addr, "listening");
    app::run(listener, state, shutdown).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Every WebSocket is an open file: raise the soft limit to the hard one and
/// say how many connections that allows.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(
            open_files = limit,
            connections = limit.saturating_sub(64),
            "open files limit raised to the hard limit (about that many connections, less ~64 for the server itself)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

/// Installs the SIGTERM and SIGINT handlers now (before the banner tells
/// anyone the server is up) and returns a future that resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
        }
    })
}

async fn user(cmd: UserCommand, config: &Config) -> Result<()> {
    let store = cli::open_store(config)?;
    match cmd {
        UserCommand::Add {
            email,
            password_stdin,
        } => {
            let password = cli::read_password(password_stdin)?;
            let user = cli::user_add(&store, &email, password).await?;
            println!("created user {} ({})", user.email, user.id);
        }
        UserCommand::List => {
            cli::user_list(&store, &config.auth.issuer, &mut std::io::stdout().lock())?
        }
        UserCommand::Disable { who } => {
            let user = who.find(&store)?;
            // Its logins are revoked and its API keys deleted: enabling it
            // again brings none of them back.
            let (families, keys) = store.disable_user(user.id).await?;
            println!(
                "disabled {} ({families} login(s) revoked, {keys} API key(s) deleted)",
                cli::user_label(&user)
            );
        }
        UserCommand::Enable { who } => {
            let user = who.find(&store)?;
            store.users().set_active(user.id, true).await?;
            println!("enabled {}", cli::user_label(&user));
        }
        UserCommand::Delete { who } => {
            let user = who.find(&store)?;
            // Everything the user owns goes too (sessions, tracks, keys,
            // counters).
            store.purge_user(user.id).await?;
            println!("deleted {}", cli::user_label(&user));
        }
    }
    Ok(())
}

async fn apikey(cmd: ApiKeyCommand, config: &Config) -> Result<()> {
    let store = cli::open_store(config)?;
    match cmd {
        ApiKeyCommand::Create { email, name } => {
            let user = cli::find_user(&store, &email)?;
            let (record, key) =
                palaver_actors::auth::create_api_key_offline(&store, &user, &name).await?;
            println!(
                "created API key {} ({}) for {}",
                record.name, record.id, user.email
            );
            println!("{key}");
            eprintln!("This key is shown once: store it now.");
        }
        ApiKeyCommand::List { email } => {
            cli::apikey_list(&store, email.as_deref(), &mut std::io::stdout().lock())?
        }
        ApiKeyCommand::Revoke { id } => {
            if !store.api_keys().delete(id).await? {
                anyhow::bail!("no API key with id {id}");
            }
            println!("revoked API key {id}");
        }
    }
    Ok(())
}
