//! Who is calling: `Authorization: Bearer <token>` mapped to a tenant and a [`Role`].
//!
//! - [`TokenTable`]: parsed from configuration (`token=tenant:role` entries, inline or a file).
//! - [`Principal`]: an axum extractor; 401 when the token is missing or unknown.
//! - [`Principal::require`]: 403 when the role is too weak.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hookline_config::Config;
use hookline_runtime::ApiError;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    /// The Fynapse "Extractions Editor": configures and runs balance extracts, reads the
    /// rest. Below `Editor`, so it changes nothing else.
    ExtractionsEditor,
    Editor,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "extractions-editor" => Ok(Role::ExtractionsEditor),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (viewer, extractions-editor, editor, admin)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("tokens: entry {0}: {1}")]
    Entry(usize, String),
    #[error("tokens_file {0:?}: {1}")]
    File(String, String),
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub role: Role,
}

impl Principal {
    /// 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// Whether the caller may see resources of `tenant`.
    pub fn can_see(&self, tenant: &str) -> bool {
        self.role == Role::Admin || self.tenant == tenant
    }
}

/// Token digests to principals. Only SHA-256 digests of tokens are held in memory.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    by_digest: HashMap<[u8; 32], Principal>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenTable {
    pub fn from_config(config: &Config) -> Result<Arc<Self>, AuthError> {
        let mut text = config.tokens.clone();
        if !config.tokens_file.is_empty() {
            let file = std::fs::read_to_string(&config.tokens_file)
                .map_err(|e| AuthError::File(config.tokens_file.clone(), e.to_string()))?;
            text.push('\n');
            text.push_str(&file);
        }
        Self::parse(&text).map(Arc::new)
    }

    /// Entries `token=tenant:role`, separated by `;` or newlines; `#` starts a comment line.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut by_digest = HashMap::new();
        let entries = text
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        for (i, entry) in entries.enumerate() {
            let bad = |why: &str| AuthError::Entry(i + 1, why.to_owned());
            let (token, rest) = entry
                .split_once('=')
                .ok_or_else(|| bad("expected token=tenant:role"))?;
            let (tenant, role) = rest
                .split_once(':')
                .ok_or_else(|| bad("expected tenant:role"))?;
            let (token, tenant) = (token.trim(), tenant.trim());
            if token.len() < 16 {
                return Err(bad("token must be at least 16 characters"));
            }
            if tenant.is_empty() {
                return Err(bad("tenant must not be empty"));
            }
            // Tenants are part of record keys (`tenant/name`): a `/` would make them ambiguous.
            if tenant.contains('/') || tenant.chars().any(char::is_control) {
                return Err(bad("tenant must not contain `/` or control characters"));
            }
            let role = role.trim().parse::<Role>().map_err(|e| bad(&e))?;
            by_digest.insert(
                digest(token),
                Principal {
                    tenant: tenant.to_owned(),
                    role,
                },
            );
        }
        Ok(Self { by_digest })
    }

    pub fn lookup(&self, token: &str) -> Option<&Principal> {
        self.by_digest.get(&digest(token))
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// Services put their `Arc<TokenTable>` in the router's state; this trait finds it.
pub trait HasTokens {
    fn tokens(&self) -> &TokenTable;
}

impl<S> FromRequestParts<S> for Principal
where
    S: HasTokens + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        state
            .tokens()
            .lookup(token.trim())
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_roles() {
        let t = TokenTable::parse(
            "# dev tokens\nadmin-token-0123456789=ops:admin; tenant-a-token-0123=acme:editor\n",
        )
        .unwrap();
        assert_eq!(
            t.lookup("admin-token-0123456789").unwrap().role,
            Role::Admin
        );
        let p = t.lookup("tenant-a-token-0123").unwrap();
        assert_eq!(p.tenant, "acme");
        assert!(p.require(Role::Editor).is_ok());
        assert!(p.require(Role::Admin).is_err());
        assert!(p.can_see("acme") && !p.can_see("other"));
        assert!(t.lookup("nope").is_none());
    }

    #[test]
    fn an_extractions_editor_edits_extracts_only() {
        let t = TokenTable::parse("extracts-token-0123456789=acme:extractions-editor").unwrap();
        let p = t.lookup("extracts-token-0123456789").unwrap();
        assert_eq!(p.role, Role::ExtractionsEditor);
        assert!(p.require(Role::Viewer).is_ok());
        assert!(p.require(Role::ExtractionsEditor).is_ok());
        assert!(p.require(Role::Editor).is_err());
        let editor = Principal {
            tenant: "acme".into(),
            role: Role::Editor,
        };
        assert!(editor.require(Role::ExtractionsEditor).is_ok());
    }

    #[test]
    fn bad_entries_say_which() {
        let e = TokenTable::parse("good-token-0123456789=a:viewer;short=a:viewer").unwrap_err();
        assert!(e.to_string().contains("entry 2"), "{e}");
        assert!(TokenTable::parse("long-enough-token-123=a:root").is_err());
        assert!(TokenTable::parse("long-enough-token-123=a").is_err());
        assert!(TokenTable::parse("long-enough-token-123=a/b:viewer").is_err());
    }
}
