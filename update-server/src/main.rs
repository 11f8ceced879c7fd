//! `gantry-server`: the command line around the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gantry_server::Config;
use gantry_server::config::LogFormat;

/// Gantry's update server: devices check in, operators upload releases and
/// assign them, devices download content-addressed blobs.
///
/// With no flags, `serve` keeps everything in ./gantry-data (SQLite
/// database, blobs, its online key, the first admin token) and listens on
/// 127.0.0.1:8080. Configuration: built-in defaults, then --config FILE
/// (TOML), then GANTRY_* environment variables, then flags. See
/// docs/operations.md.
#[derive(Parser)]
#[command(name = "gantry-server", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM (then finish requests in
    /// flight within `limits.shutdown_grace`, cut what is left, flush
    /// last-seen times and exit 0).
    ///
    /// On first start it creates the data directory (mode 0700), the
    /// SQLite database (0600), the blob directory, the server secret
    /// (server-secret, 0600), an online ticket-signing key (server-key.pem,
    /// 0600; add its key id to the trust root's `server` role) and an admin
    /// API token (printed once, and written to admin-token, 0600). It
    /// refuses to start while a secret file is readable by other users.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080; env GANTRY_LISTEN].
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Data directory [default: ./gantry-data; env GANTRY_DATA_DIR].
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Database URL: sqlite://PATH or postgres://USER@HOST/DB
        /// [default: sqlite://DATA/gantry.db; env GANTRY_DATABASE_URL].
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// TOML configuration file [env GANTRY_CONFIG].
        #[arg(long, value_name = "FILE", env = "GANTRY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (defaults, file, environment) as
    /// the server would use it, passwords hidden, and exit.
    Config {
        /// TOML configuration file [env GANTRY_CONFIG].
        #[arg(long, value_name = "FILE", env = "GANTRY_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Field values escaped: a device's string cannot forge a line.
        LogFormat::Text => builder.fmt_fields(gantry_server::logfmt::fields()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves at SIGINT or SIGTERM. The handlers are installed here, before
/// the server starts, not when the future is first polled: a signal that
/// arrives right after "listening" is printed must stop it gracefully too,
/// not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok());
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term.take()) => {}
            () = wait(int.take()) => {}
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Config { config } => {
            let c = Config::load(config.as_deref())?;
            println!("{c:#?}");
            Ok(())
        }
        Command::Serve { listen, data, database_url, config } => {
            let mut c = Config::load(config.as_deref()).context("configuration")?;
            if let Some(l) = listen {
                c.listen = l;
            }
            if let Some(d) = data {
                c.data_dir = d;
            }
            if let Some(u) = database_url {
                c.database_url = Some(u.into());
            }
            init_logs(c.log_format);
            let data_dir = c.data_dir.clone();
            let running = gantry_server::start(c, shutdown_signal())
                .await
                .with_context(|| format!("cannot start with data directory {}", data_dir.display()))?;
            println!("gantry-server listening on {}://{}", running.scheme, running.addr);
            println!("data directory: {}", data_dir.display());
            println!(
                "server key: {} ({}); add this key id to the trust root's server role",
                running.server_key_id,
                running.server_key_file.display()
            );
            if let Some(token) = &running.admin_token {
                println!("admin API token (shown once; also in {}): {token}", running.admin_token_file.display());
            }
            running.wait().await.context("server")?;
            Ok(())
        }
    }
}
