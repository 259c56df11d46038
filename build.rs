//! Build script: stamps the git revision into `oidc-bff --version`.
//!
//! `OIDC_BFF_GIT_REV` at build time wins (the container build passes it,
//! since its context has no `.git`); otherwise `git rev-parse --short HEAD`,
//! with `-dirty` when tracked files differ from HEAD; outside a git checkout
//! (a source tarball) the version says so instead of failing the build.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=OIDC_BFF_GIT_REV");
    let rev = match std::env::var("OIDC_BFF_GIT_REV") {
        Ok(rev) if !rev.trim().is_empty() => rev.trim().to_owned(),
        _ => from_git().unwrap_or_else(|| "no git revision".to_owned()),
    };
    println!("cargo:rustc-env=OIDC_BFF_GIT_REV={rev}");
}

fn from_git() -> Option<String> {
    let rev = git(&["rev-parse", "--short", "HEAD"]).filter(|r| !r.is_empty())?;
    // Rerun when HEAD moves or the index changes (commit, checkout, add),
    // and when the sources change (which may make the tree dirty).
    let mut watched: Vec<String> = ["HEAD", "index"]
        .iter()
        .filter_map(|file| git(&["rev-parse", "--git-path", file]))
        .collect();
    if let Some(name) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &name])
    {
        watched.push(p);
    }
    for p in watched.iter().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
    for path in ["src", "templates", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}
