//! Registry credentials, as Docker and its tools find them: `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`): a credential helper named for the host in
//! `credHelpers`, else the default `credsStore` helper, else the host's entry in `auths`
//! (`auth` = base64 `user:password`, or `username` and `password`).
//!
//! A helper is the program `docker-credential-<name>`, asked with `get` and the server on
//! stdin; it answers `{"Username": ..., "Secret": ...}`. The password is held in [`Password`],
//! whose `Debug` prints `***`; nothing here logs or formats it, and errors name the file,
//! the host and the username only.
//!
//! Written here rather than with the `docker_credential` crate: the lookup is forty lines,
//! and owning it keeps the secret inside one redacting type from the file to the header.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::cmd::{Cmd, CmdError};

/// A password or token: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);
impl Password {
    pub fn new(s: String) -> Password {
        Password(s)
    }
    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A username and password for one registry, and where they came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
    /// `~/.docker/config.json`, or `docker-credential-<helper>`.
    pub source: String,
}

impl Credentials {
    /// The value of a `Basic` `Authorization` header.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.expose());
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("`{path}`: {message}")]
    Config { path: PathBuf, message: String },
    #[error("credential helper `{helper}` for `{host}`: {message}")]
    Helper { helper: String, host: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The Docker config file: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
}

/// The keys under which a host may be written in `auths` or `credHelpers`.
fn keys_for(host: &str) -> Vec<String> {
    let mut keys = vec![
        host.to_owned(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
        format!("https://{host}/v2/"),
    ];
    if host == "docker.io" || host == "registry-1.docker.io" {
        keys.push("https://index.docker.io/v1/".to_owned());
    }
    keys
}

/// Credentials for `host` (`name[:port]`) from the Docker config at `path` (default:
/// [`docker_config_path`]); `None` when it names none (anonymous access).
pub fn lookup(host: &str, path: Option<&Path>) -> Result<Option<Credentials>, AuthError> {
    let Some(path) = path.map(Path::to_owned).or_else(docker_config_path) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuthError::Config { path, message: e.to_string() }),
    };
    let config: DockerConfig = serde_json::from_str(&text)
        .map_err(|e| AuthError::Config { path: path.clone(), message: format!("not a Docker config file: {e}") })?;
    let keys = keys_for(host);
    if let Some(helper) = keys.iter().find_map(|k| config.cred_helpers.get(k)) {
        return helper_get(helper, host);
    }
    for k in &keys {
        if let Some(entry) = config.auths.get(k) {
            let source = path.display().to_string();
            if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let raw =
                    base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(
                        || AuthError::Config { path: path.clone(), message: format!("`auths.{k}.auth` is not base64 of `user:password`") },
                    )?;
                let (user, pass) = raw.split_once(':').ok_or_else(|| AuthError::Config {
                    path: path.clone(),
                    message: format!("`auths.{k}.auth` is not base64 of `user:password`"),
                })?;
                return Ok(Some(Credentials { username: user.to_owned(), password: Password(pass.to_owned()), source }));
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Ok(Some(Credentials { username: u.clone(), password: Password(p.clone()), source }));
            }
        }
    }
    match &config.creds_store {
        Some(store) => helper_get(store, host),
        None => Ok(None),
    }
}

/// Asks `docker-credential-<helper> get` for `host`.
fn helper_get(helper: &str, host: &str) -> Result<Option<Credentials>, AuthError> {
    let program = format!("docker-credential-{helper}");
    let err = |message: String| AuthError::Helper { helper: program.clone(), host: host.to_owned(), message };
    let out = Cmd::new(&program, format!("the Docker credential helper for `{host}`"))
        .arg("get")
        .stdin(host.as_bytes().to_vec())
        .output()
        .map_err(|e| match e {
            CmdError::Start { source, .. } => err(format!("cannot run it: {source}")),
            other => err(other.to_string()),
        })?;
    if !out.success() {
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned() + String::from_utf8_lossy(&out.stderr).trim();
        // The helpers' own words for "nothing stored for this server".
        if said.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let status = out.code.map_or_else(|| "ended by a signal".to_owned(), |c| format!("exit status {c}"));
        return Err(err(format!("failed (`{program} get`, {status}): {}", said.chars().take(200).collect::<String>())));
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: Answer = serde_json::from_slice(&out.stdout).map_err(|e| err(format!("answered something that is not its JSON: {e}")))?;
    if a.username == "<token>" {
        return Err(err("holds an identity token; only a username and password are supported".to_owned()));
    }
    Ok(Some(Credentials { username: a.username, password: Password(a.secret), source: program.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auths_in_both_forms_and_never_debug_prints_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{b64}"}},"https://reg.example":{{"username":"bob","password":"pw2"}}}}}}"#),
        )
        .unwrap();
        let a = lookup("127.0.0.1:5000", Some(&path)).unwrap().unwrap();
        assert_eq!(a.username, "alice");
        assert_eq!(a.password.expose(), "s3cret-pw");
        assert!(!format!("{a:?}").contains("s3cret"));
        let b = lookup("reg.example", Some(&path)).unwrap().unwrap();
        assert_eq!((b.username.as_str(), b.password.expose()), ("bob", "pw2"));
        assert!(lookup("other.example", Some(&path)).unwrap().is_none());
        assert!(lookup("x", Some(&dir.path().join("absent.json"))).unwrap().is_none());
    }

    #[test]
    fn a_missing_helper_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example":"no-such-helper-xyz"}}"#).unwrap();
        let e = lookup("reg.example", Some(&path)).unwrap_err().to_string();
        assert!(e.contains("docker-credential-no-such-helper-xyz"), "{e}");
    }
}
