//! Seeds a gateway's session store with N sessions for benchmarks: each is
//! written through the library's session API (`Sessions::create`, the code
//! path of a login's last step: sealed record, shard tag, user index,
//! provider-session index), never as hand-built keys, so the gateway opens
//! them like any other. Writes the cookies of a sample of them, one
//! `name=value` a line, for a load generator.
//!
//! Tokens are Keycloak-typical in shape and size (RS256 JWT access and ID
//! tokens of 1,200 and 1,000 characters, a 400-character JWT refresh
//! token), varied per session; five sessions per user by default.
//!
//!     cargo run --release --example seed_sessions -- --config bff.toml \
//!         --sessions 1000000 --cookies cookies.txt --sample 10000
//!
//! Not part of the gateway. Creates are issued concurrently over the
//! store's one multiplexed connection (Redis pipelines them).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use base64::Engine as _;
use clap::Parser;
use futures_util::StreamExt;

use oidc_bff::secret::SecretString;
use oidc_bff::session::{ClientInfo, NewLogin, Sessions};

#[derive(Parser)]
struct Args {
    /// The gateway's configuration file (its store, prefix and keys).
    #[arg(long)]
    config: PathBuf,
    /// How many sessions to write.
    #[arg(long, default_value_t = 1000)]
    sessions: u64,
    /// How many distinct users they belong to (default: sessions / 5).
    #[arg(long)]
    users: Option<u64>,
    /// Where to write the sample's cookies (`name=value` a line).
    #[arg(long)]
    cookies: Option<PathBuf>,
    /// How many cookies to write, spread evenly over the sessions.
    #[arg(long, default_value_t = 10_000)]
    sample: u64,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

/// A JWT-shaped token of about `len` characters, different per `seed`.
fn jwt_of(len: usize, seed: u64) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = b64(br#"{"alg":"RS256","typ":"JWT","kid":"kP4x9aVb0d8sZ-_c2Wq1nT7yU3mLr5eJ"}"#);
    let mut x = (seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let sig: Vec<u8> = (0..if len > 800 { 256 } else { 32 })
        .map(|_| next() as u8)
        .collect();
    let sig = b64(&sig);
    let room = len.saturating_sub(header.len() + sig.len() + 2) * 3 / 4;
    let mut payload = String::from("{\"jti\":\"");
    while payload.len() + 2 < room {
        payload.push(char::from(b'a' + (next() % 26) as u8));
    }
    payload.push_str("\"}");
    format!("{header}.{}.{sig}", b64(payload.as_bytes()))
}

fn login(n: u64, users: u64) -> NewLogin {
    let user = format!("seed-user-{:07}", n % users);
    NewLogin {
        sid: Some(format!("{user}-sid-{}", n % 3)),
        access_token: SecretString::new(jwt_of(1_200, 3 * n)),
        refresh_token: Some(SecretString::new(jwt_of(400, 3 * n + 1))),
        id_token: Some(SecretString::new(jwt_of(1_000, 3 * n + 2))),
        // 0: the provider did not say, so no request refreshes.
        access_expires_at: 0,
        claims_json: format!(
            "{{\"sub\":\"{user}\",\"name\":\"Seeded Person\",\"email\":\"{user}@example.com\",\"groups\":[\"staff\",\"dev\"]}}"
        ),
        scopes: Some("openid profile email".into()),
        dpop_key: None,
        sub: user,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = oidc_bff::config::load(Some(args.config.as_path()), env)
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let users = args.users.unwrap_or(args.sessions / 5).max(1);
    let every = (args.sessions / args.sample.max(1)).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = Arc::new(oidc_bff::session::store::open(&config)?);
        let sessions = Arc::new(Sessions::new(&config.session, store));
        let now = oidc_bff::clock::unix_now();
        let started = Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let sampled: Vec<String> = futures_util::stream::iter(0..args.sessions)
            .map(|n| {
                let sessions = sessions.clone();
                let done = done.clone();
                async move {
                    // A busy machine can push a create past the store
                    // timeout: try again (a new session ID each time).
                    let mut tries = 0;
                    let (_, cookie) = loop {
                        match sessions
                            .create(login(n, users), &ClientInfo::default(), now)
                            .await
                        {
                            Ok(created) => break created,
                            Err(e) if tries < 5 => {
                                tries += 1;
                                eprintln!("create: {e}; trying again");
                            }
                            Err(e) => anyhow::bail!("create: {e}"),
                        }
                    };
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if d.is_multiple_of(100_000) {
                        eprintln!("{d} sessions, {:.0} s", started.elapsed().as_secs_f64());
                    }
                    let pair = n.is_multiple_of(every).then(|| {
                        cookie
                            .to_str()
                            .unwrap_or_default()
                            .split(';')
                            .next()
                            .unwrap_or_default()
                            .to_owned()
                    });
                    anyhow::Ok(pair)
                }
            })
            .buffer_unordered(args.concurrency)
            .filter_map(|r| async move {
                match r {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("{e}");
                        None
                    }
                }
            })
            .collect()
            .await;
        let secs = started.elapsed().as_secs_f64();
        let written = done.load(Ordering::Relaxed);
        println!(
            "seeded {written} sessions of {users} users in {secs:.1} s ({:.0}/s)",
            written as f64 / secs
        );
        anyhow::ensure!(written == args.sessions, "some creates failed");
        if let Some(path) = args.cookies {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            for c in sampled.iter().take(args.sample as usize) {
                writeln!(f, "{c}")?;
            }
            f.flush()?;
            println!(
                "wrote {} cookies to {}",
                sampled.len().min(args.sample as usize),
                path.display()
            );
        }
        anyhow::Ok(())
    })
}
