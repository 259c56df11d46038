//! Operator commands against the configured store: `oidc-bff sessions
//! list|revoke|stats`. They need the configuration (store address, key
//! prefix, server keys to read session metadata) but not the provider.
//! Output is a table, or JSON with `--json` for scripts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;
use serde_json::json;

use crate::config::Config;
use crate::session::cookie::StoreId;
use crate::session::store::{ListCursor, RevokeReason};
use crate::session::{SessionInfo, Sessions};

#[derive(Subcommand, Debug)]
pub enum SessionsCommand {
    /// A user's sessions, newest first, one page at a time.
    List {
        /// The user's subject (`sub` claim).
        #[arg(long)]
        user: String,
        /// Sessions per page (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Start after this point: the `next` cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON instead of a table, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// End one session (--id), or all of a user's (--user, optionally --except one).
    Revoke {
        /// End every session of this user (`sub` claim).
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        user: Option<String>,
        /// With --user: keep this session.
        #[arg(long, requires = "user")]
        except: Option<String>,
        /// A session ID as `list` shows it.
        #[arg(long)]
        id: Option<String>,
        /// Print JSON instead of a table, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Session and user counts, the users with the most sessions, store memory.
    Stats {
        /// How many of the users with the most sessions to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Print JSON instead of a table, for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn session_rows(list: &[SessionInfo]) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "ID",
            "CREATED",
            "LAST ACTIVE",
            "EXPIRES",
            "LAST IP",
            "USER AGENT",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for s in list {
        rows.push(vec![
            s.id.clone(),
            time(s.created_at),
            time(s.last_active_at),
            time(s.expires_at),
            s.last_ip.clone().unwrap_or_else(|| "-".into()),
            s.user_agent
                .as_deref()
                .map_or("-".into(), |u| u.chars().take(40).collect()),
        ]);
    }
    rows
}

fn parse_id(s: &str) -> Result<StoreId, String> {
    StoreId::parse(s).ok_or_else(|| {
        format!("`{s}` is not a session ID (60 or 64 hex characters, as `sessions list` prints)")
    })
}

/// Runs one `sessions` command; exit 0 on success, 1 on a store error, 2 on
/// bad arguments.
pub fn run_sessions(config: Config, cmd: SessionsCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let store = match crate::session::store::open(&config) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("cannot open the store: {e}");
                return ExitCode::FAILURE;
            }
        };
        let sessions = Sessions::new(&config.session, store);
        match execute(&sessions, cmd).await {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(CliError::Usage(m)) => {
                eprintln!("error: {m}");
                ExitCode::from(2)
            }
            Err(CliError::Store(m)) => {
                eprintln!("error: {m}");
                ExitCode::FAILURE
            }
        }
    })
}

enum CliError {
    Usage(String),
    Store(String),
}

impl From<crate::session::store::StoreError> for CliError {
    fn from(e: crate::session::store::StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

async fn execute(sessions: &Sessions, cmd: SessionsCommand) -> Result<String, CliError> {
    let now = crate::clock::unix_now();
    let actor = format!("cli:{}", whoami());
    match cmd {
        SessionsCommand::List {
            user,
            limit,
            cursor,
            json,
        } => {
            let cursor = cursor
                .as_deref()
                .map(|c| {
                    ListCursor::parse(c).ok_or_else(|| {
                        CliError::Usage(format!(
                            "`{c}` is not a cursor (use the `next` value a previous page printed)"
                        ))
                    })
                })
                .transpose()?;
            let page = sessions
                .list_user(&user, cursor.as_ref(), usize::from(limit), now)
                .await?;
            Ok(if json {
                format!(
                    "{}\n",
                    json!({ "user": user, "sessions": page.sessions, "next_cursor": page.next_cursor })
                )
            } else {
                let mut out = if page.sessions.is_empty() {
                    format!("no sessions for user {user}\n")
                } else {
                    table(&session_rows(&page.sessions))
                };
                if let Some(next) = page.next_cursor {
                    out.push_str(&format!("more: --cursor {next}\n"));
                }
                out
            })
        }
        SessionsCommand::Revoke {
            id: Some(id), json, ..
        } => {
            let id = parse_id(&id).map_err(CliError::Usage)?;
            let outcome = sessions
                .revoke(&id, RevokeReason::Admin, &actor, now)
                .await?;
            Ok(if json {
                format!("{}\n", json!({ "id": id.as_str(), "result": outcome }))
            } else {
                match outcome {
                    crate::session::store::RevokeOutcome::Revoked => format!("revoked {id}\n"),
                    crate::session::store::RevokeOutcome::AlreadyRevoked { previous } => format!(
                        "{id} was already revoked{}\n",
                        previous.map_or(String::new(), |p| format!(
                            " ({} by {} at {})",
                            p.reason.as_str(),
                            p.actor,
                            time(p.at)
                        ))
                    ),
                    crate::session::store::RevokeOutcome::NotFound => format!("no session {id}\n"),
                }
            })
        }
        SessionsCommand::Revoke {
            user: Some(user),
            except,
            json,
            ..
        } => {
            let except = except
                .as_deref()
                .map(parse_id)
                .transpose()
                .map_err(CliError::Usage)?;
            let ids = sessions
                .revoke_user(&user, except.as_ref(), RevokeReason::Admin, &actor, now)
                .await?;
            Ok(if json {
                format!(
                    "{}\n",
                    json!({ "user": user, "revoked": ids.iter().map(StoreId::as_str).collect::<Vec<_>>() })
                )
            } else {
                let mut out = format!("revoked {} session(s) of {user}\n", ids.len());
                for id in ids {
                    out.push_str(&format!("  {id}\n"));
                }
                out
            })
        }
        SessionsCommand::Revoke { .. } => Err(CliError::Usage("give --id ID or --user SUB".into())),
        SessionsCommand::Stats { top, json } => {
            let stats = sessions.stats(top, now).await?;
            Ok(if json {
                format!("{}\n", serde_json::to_value(&stats).unwrap_or_default())
            } else {
                let mut out = format!(
                    "sessions: {}\nusers:    {}\nmemory:   {}\n",
                    stats.sessions,
                    stats.users,
                    stats
                        .memory_bytes
                        .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
                );
                if !stats.top_users.is_empty() {
                    out.push('\n');
                    let mut rows = vec![vec!["USER".to_owned(), "SESSIONS".to_owned()]];
                    rows.extend(
                        stats
                            .top_users
                            .iter()
                            .map(|u| vec![u.user.clone(), u.sessions.to_string()]),
                    );
                    out.push_str(&table(&rows));
                }
                out
            })
        }
    }
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&[
            vec!["A".into(), "BB".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
