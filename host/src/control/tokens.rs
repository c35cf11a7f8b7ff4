//! Named API tokens: made, listed and revoked by an admin, verified at
//! every request. Invariant: a token acts only within its role and pools;
//! the routes each role reaches are `server::access`'s table, this module
//! keeps the tokens themselves.
//!
//! A secret is `host_NAME_HEX`: 256 random bits (getrandom) in hex after
//! the token's name, so a check is one lookup by name, and a worker can
//! read its name from its own token. The store keeps only an HMAC-SHA256
//! of the whole secret, compared in constant time. A slow hash buys
//! nothing against 256 random bits; the key keeps a copy of the `tokens`
//! rows (a backup of them, a log of the table) from being checked against
//! guesses or matched across databases without the key as well.
//!
//! The key is random, made with the first token in the same transaction,
//! and kept in the store (`keys`), never replaced. So every replica sharing
//! a PostgreSQL database verifies every token without configuration of its
//! own, and rotating the bootstrap token (`HOST_API_TOKEN`) leaves the named
//! tokens valid. A reader of the whole database gets the key and the hashes,
//! but no secret: a hash is no credential.
//!
//! Every check reads the token's record (the key is cached once read, as
//! it never changes): a revoked token is refused by every replica at its
//! next request.

use super::Control;
use super::names::{check_name, check_user_name};
use crate::error::ApiError;
use crate::model::{ApiToken, Role, Timestamp};
use crate::secret;
use crate::store::Records;
use serde::{Deserialize, Serialize};

/// Pools one token may name.
pub const MAX_POOLS: usize = 100;
const PREFIX: &str = "host_";

/// What a write may touch for the token that asks, checked inside the
/// write's own transaction: `server::access` checks what a request names
/// before any handler runs, but the records it looked at may change before
/// the write commits (a deployment made in another pool meanwhile), so a
/// write that depends on a record's pool or holder checks it again here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    /// The pools it may change; `None`: every pool (an admin).
    pub pools: Option<Vec<String>>,
    /// A worker token's name: it reports only on runs it holds.
    pub worker: Option<String>,
}

impl Scope {
    /// An admin's: everything.
    pub fn all() -> Scope {
        Scope::default()
    }

    pub(super) fn covers(&self, pool: &str) -> bool {
        self.pools
            .as_ref()
            .is_none_or(|pools| pools.iter().any(|p| p == pool))
    }

    /// 403 `pool` unless this scope covers `pool`.
    pub(super) fn check_pool(&self, what: &str, pool: &str) -> Result<(), ApiError> {
        if self.covers(pool) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            "pool",
            format!("pool: {what} is in pool `{pool}`, which this token does not cover"),
        ))
    }

    /// 403 `worker` unless this scope is an admin's or the worker holding
    /// `run` (a worker token reports only on runs it holds: cancelling
    /// another's is a deployer's `/cancel`).
    pub(super) fn check_holder(&self, run: &crate::model::FlowRun) -> Result<(), ApiError> {
        match &self.worker {
            Some(name) if run.worker.as_deref() != Some(name.as_str()) => Err(ApiError::forbidden(
                "worker",
                format!(
                    "worker: flow run {} is held by {}, not worker `{name}`; a worker token acts only on runs it holds",
                    run.id,
                    run.worker
                        .as_deref()
                        .map_or_else(|| "no worker".to_string(), |w| format!("worker `{w}`")),
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `POST /api/tokens`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    pub name: String,
    pub role: Role,
    /// The pools a deployer or worker token covers (at least one); none for
    /// admin and viewer tokens, which cover everything they may do.
    #[serde(default)]
    pub pools: Vec<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    pub pools: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub token: TokenView,
    /// The bearer token; the server keeps only a keyed hash of it.
    pub secret: String,
}

/// A named token that checked out: who is asking, and the hash it was
/// found under (a UI session holds it to learn of a revocation).
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub token: TokenView,
    pub hash: String,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> TokenView {
        TokenView {
            name: t.name.clone(),
            role: t.role,
            pools: t.pools.clone(),
            created: t.created,
        }
    }
}

/// The name a secret says it belongs to (`host_NAME_HEX`), if it has that
/// shape. Names may hold `_`; the hex part never does.
pub fn token_name(secret: &str) -> Option<&str> {
    let (name, hex) = secret.strip_prefix(PREFIX)?.rsplit_once('_')?;
    (!name.is_empty() && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(name)
}

fn random_bytes() -> Result<[u8; 32], ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        ApiError::internal(format!("cannot draw random bytes from the system: {e}"))
    })?;
    Ok(bytes)
}

fn hash(key: &[u8; 32], secret: &str) -> String {
    secret::to_hex(&secret::hmac_sha256(key, secret.as_bytes()))
}

fn check_spec(spec: &TokenSpec) -> Result<Vec<String>, ApiError> {
    check_user_name("name", &spec.name)?;
    if spec.pools.len() > MAX_POOLS {
        return Err(ApiError::bad_request(
            "pools",
            format!("pools: at most {MAX_POOLS}"),
        ));
    }
    let mut pools = Vec::new();
    for (i, pool) in spec.pools.iter().enumerate() {
        check_name(&format!("pools[{i}]"), pool)?;
        if !pools.contains(pool) {
            pools.push(pool.clone());
        }
    }
    match (spec.role.scoped_to_pools(), pools.is_empty()) {
        (true, true) => Err(ApiError::bad_request(
            "pools",
            format!(
                "pools: a {} token covers the pools it names; name at least one",
                spec.role
            ),
        )),
        (false, false) => Err(ApiError::bad_request(
            "pools",
            format!(
                "pools: a {} token covers every pool; leave pools out",
                spec.role
            ),
        )),
        _ => Ok(pools),
    }
}

impl Control {
    /// Makes a token and answers its secret, which nothing keeps.
    pub async fn create_token(&self, spec: TokenSpec) -> Result<NewToken, ApiError> {
        let pools = check_spec(&spec)?;
        let (new_key, random) = (random_bytes()?, random_bytes()?);
        let secret = format!("{PREFIX}{}_{}", spec.name, secret::to_hex(&random));
        let token = self
            .write(move |w| {
                if w.token(&spec.name)?.is_some() {
                    return Err(ApiError::conflict_on(
                        "name",
                        format!("name: a token `{}` exists; revoke it first", spec.name),
                    ));
                }
                let key = match w.token_key()? {
                    Some(key) => key,
                    None => {
                        w.put_token_key(&new_key)?;
                        new_key
                    }
                };
                let token = ApiToken {
                    name: spec.name,
                    role: spec.role,
                    pools,
                    created: w.now(),
                    hash: hash(&key, &secret),
                };
                w.put_token(&token)?;
                Ok((token, secret))
            })
            .await?;
        let (token, secret) = token;
        tracing::info!(token = %token.name, role = %token.role, pools = ?token.pools, "API token created");
        Ok(NewToken {
            token: TokenView::from(&token),
            secret,
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenView>, ApiError> {
        self.read(|r| Ok(r.tokens()?.iter().map(TokenView::from).collect()))
    }

    /// Whether any named token exists (a server without a bootstrap token
    /// would otherwise be open beside them).
    pub fn has_tokens(&self) -> Result<bool, ApiError> {
        self.read(|r| Ok(!r.tokens()?.is_empty()))
    }

    pub async fn revoke_token(&self, name: &str) -> Result<(), ApiError> {
        let name = name.to_string();
        let revoked = name.clone();
        self.write(move |w| {
            if w.token(&name)?.is_none() {
                return Err(ApiError::not_found_on("name", format!("no token `{name}`")));
            }
            Ok(w.delete_token(&name)?)
        })
        .await?;
        tracing::info!(token = %revoked, "API token revoked");
        Ok(())
    }

    /// The token `secret` is, if it is a live named token of this store.
    /// `None` for anything else: a secret of another shape, an unknown or
    /// revoked name, a wrong secret.
    pub fn verify_token(&self, secret: &str) -> Result<Option<Verified>, ApiError> {
        let Some(name) = token_name(secret) else {
            return Ok(None);
        };
        let cached = self.token_key.get().copied();
        let (key, token) = self.read(|r| {
            let key = match cached {
                Some(key) => Some(key),
                None => r.token_key()?,
            };
            Ok((key, r.token(name)?))
        })?;
        let (Some(key), Some(token)) = (key, token) else {
            return Ok(None);
        };
        let _ = self.token_key.set(key);
        let given = hash(&key, secret);
        Ok(secret::same_text(&given, &token.hash).then(|| Verified {
            token: TokenView::from(&token),
            hash: token.hash,
        }))
    }

    /// Whether the token `name` is still the one stored under `hash`: not
    /// revoked, nor revoked and made again (a UI session ends with it).
    pub fn token_holds(&self, name: &str, hash: &str) -> Result<bool, ApiError> {
        let token = self.read(|r| Ok(r.token(name)?))?;
        Ok(token.is_some_and(|t| secret::same_text(&t.hash, hash)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_names_its_token() {
        let hex = "ab".repeat(32);
        assert_eq!(token_name(&format!("host_w1_{hex}")), Some("w1"));
        assert_eq!(token_name(&format!("host_a_b.c_{hex}")), Some("a_b.c"));
        assert_eq!(token_name(&format!("host__{hex}")), None);
        assert_eq!(token_name(&format!("host_w1_{}", &hex[1..])), None);
        assert_eq!(token_name("s3cret"), None);
        assert_eq!(token_name(&format!("other_w1_{hex}")), None);
    }

    #[test]
    fn roles_with_pools_need_them_and_the_others_refuse_them() {
        let spec = |role, pools: &[&str]| TokenSpec {
            name: "t".into(),
            role,
            pools: pools.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(
            check_spec(&spec(Role::Worker, &["p1", "p1", "p2"])).expect("ok"),
            ["p1", "p2"]
        );
        for (role, pools) in [
            (Role::Worker, &[][..]),
            (Role::Deployer, &[][..]),
            (Role::Admin, &["p1"][..]),
            (Role::Viewer, &["p1"][..]),
        ] {
            let error = check_spec(&spec(role, pools)).expect_err("refused");
            assert_eq!(error.field.as_deref(), Some("pools"), "{role}");
        }
        let error = check_spec(&spec(Role::Worker, &["p1", "../x"])).expect_err("bad name");
        assert_eq!(error.field.as_deref(), Some("pools[1]"));
    }
}
