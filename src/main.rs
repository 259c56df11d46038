//! The `oidc-bff` binary: parse the command line, load and validate the
//! configuration, start logging, run. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use oidc_bff::config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `oidc-bff --version`: the crate version and the git revision it was
/// built from (`-dirty` with uncommitted changes; see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OIDC_BFF_GIT_REV"),
    ")"
);

/// Exit code for a configuration error (sysexits EX_USAGE).
const EX_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "oidc-bff",
    version = VERSION,
    about = "OAuth2/OpenID Connect backend-for-frontend gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML); OIDC_BFF__SECTION__KEY variables override it.
    #[arg(long, short, global = true, env = "OIDC_BFF_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Exit 0 if URL answers 2xx within 3 s (container health checks).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
        url: String,
    },
    /// Inspect and revoke sessions in the configured store.
    #[command(subcommand)]
    Sessions(oidc_bff::cli::SessionsCommand),
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = env_vars();
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => check_config(cli.config.as_deref(), env),
        Command::Serve => serve(cli.config.as_deref(), env),
        Command::Healthcheck { url } => healthcheck(&url),
        Command::Sessions(cmd) => {
            let config = match config::load(cli.config.as_deref(), env) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            oidc_bff::cli::run_sessions(config, cmd)
        }
    }
}

fn check_config(path: Option<&std::path::Path>, env: Vec<(String, String)>) -> ExitCode {
    match config::load_checked(path, env) {
        Ok((raw, _)) => {
            print!("{}", raw.to_redacted_toml());
            eprintln!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

fn healthcheck(url: &str) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("{url} is not healthy: cannot start the runtime");
        return ExitCode::FAILURE;
    };
    match runtime.block_on(probe(url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("{url} is not healthy: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Why `url` is not healthy, if it is not: no answer within 3 s, or an
/// answer that is not 2xx (with the start of its body: /readyz says which
/// check failed).
async fn probe(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client.get(url).send().await.map_err(|e| {
        if e.is_timeout() {
            "no answer within 3 s".to_owned()
        } else if e.is_connect() {
            "cannot connect (is the gateway running and listening there?)".to_owned()
        } else {
            format!("request failed: {e}")
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(300).collect();
    Err(if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    })
}

fn serve(path: Option<&std::path::Path>, env: Vec<(String, String)>) -> ExitCode {
    let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let rust_log = var("RUST_LOG");
    let no_color = oidc_bff::telemetry::no_color(var("NO_COLOR").as_deref());
    let (raw, config) = match config::load_checked(path, env.clone()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let (traces, traces_layer) = match config.tracing.as_ref().map(oidc_bff::traces::start) {
        None => (oidc_bff::traces::Traces::off(), None),
        Some(Ok((traces, layer))) => (traces, Some(layer)),
        Some(Err(e)) => {
            eprintln!("cannot start tracing: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let log_level = oidc_bff::telemetry::init_with_traces(
        &config.log,
        rust_log.as_deref(),
        no_color,
        traces_layer,
    );
    // A worker's batched log lines are written before its panic message.
    oidc_bff::log_output::flush_on_panic();
    // SIGHUP reads the file again the same way.
    let source = oidc_bff::reload::Source {
        path: path.map(ToOwned::to_owned),
        env,
        raw,
        log_level,
    };
    if !config.session.secure_cookies {
        tracing::warn!(
            "session.insecure_cookies = true: cookies are sent over plain HTTP; never do this in production"
        );
    }
    if matches!(config.store.kind, config::StoreKind::Memory) {
        tracing::warn!(
            "store.kind = \"memory\": sessions live in this process only; use Redis for more than one instance"
        );
    }
    let result = oidc_bff::server::run(config, source);
    // Workers still running past the grace period never write their
    // batches themselves.
    oidc_bff::log_output::flush_all();
    // Queued spans are sent before exit (the batch processor's last flush).
    traces.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "oidc-bff stopped");
            oidc_bff::log_output::flush_all();
            ExitCode::FAILURE
        }
    }
}
