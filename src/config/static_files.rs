//! `[static]`: the single-page app served on `/`, if any.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::common::Issues;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStatic {
    /// Directory of the single-page app to serve on `/` (unset: nothing).
    pub dir: Option<PathBuf>,
    /// Serve `index.html` for unknown paths without a file extension
    /// (client-side routes).
    pub spa_fallback: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct StaticConfig {
    pub dir: PathBuf,
    pub spa_fallback: bool,
}

pub(super) fn validate(raw: &RawStatic, issues: &mut Issues) -> Option<StaticConfig> {
    let dir = raw.dir.as_ref()?;
    if !dir.is_dir() {
        issues.add(
            "static.dir",
            format!("{} is not a directory", dir.display()),
        );
    }
    Some(StaticConfig {
        dir: dir.clone(),
        spa_fallback: raw.spa_fallback.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{keys_of, load_str, minimal};

    #[test]
    fn a_missing_static_directory_is_reported() {
        let toml = minimal() + "\n[static]\ndir = \"/nonexistent/spa\"\n";
        let keys = keys_of(load_str(&toml, &[]).expect_err("invalid"));
        assert_eq!(keys, ["static.dir"]);
    }
}
