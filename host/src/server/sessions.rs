//! The web UI's sessions: a random id per login, kept by this server in
//! memory with an absolute expiry and the [`Caller`] who logged in, ended
//! by `/logout` or with its named token (`AppState::caller` checks the
//! token is still there at every request, and a revocation here ends its
//! sessions at once).
//!
//! The cookie holds only the id. The server keeps a SHA-256 of it, so a
//! lookup compares digests (no timing on the id's bytes) and what sits in
//! memory cannot be replayed as a cookie. Sessions are per server process:
//! a restart, or another replica behind a load balancer, asks for the
//! token again.

use super::access::Caller;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login lasts, however active: a cookie that leaks is good for
/// a working day at most.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Logins kept at once; the oldest goes first. Only the token's holders
/// can log in, so this bounds memory, not an attacker.
pub const MAX_SESSIONS: usize = 10_000;

type Digest32 = [u8; 32];

#[derive(Debug, thiserror::Error)]
#[error("cannot draw a session id from the operating system: {0}")]
pub struct NoRandomness(String);

pub struct Sessions {
    lifetime: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// When each session began and who logged in, by the digest of its id.
    began: HashMap<Digest32, (Instant, Caller)>,
    /// The same, oldest first: expiry and eviction take from the front.
    by_age: BTreeSet<(Instant, Digest32)>,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new(SESSION_LIFETIME, MAX_SESSIONS)
    }
}

impl Sessions {
    pub fn new(lifetime: Duration, max: usize) -> Sessions {
        Sessions {
            lifetime,
            max: max.max(1),
            inner: Mutex::default(),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new session's id: 256 bits from the OS's CSPRNG, as hex.
    pub fn begin(&self, caller: Caller) -> Result<String, NoRandomness> {
        self.begin_at(Instant::now(), caller)
    }

    fn begin_at(&self, now: Instant, caller: Caller) -> Result<String, NoRandomness> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| NoRandomness(e.to_string()))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut inner = self.lock();
        inner.expire(now, self.lifetime);
        while inner.began.len() >= self.max {
            let Some((_, oldest)) = inner.by_age.pop_first() else {
                break;
            };
            inner.began.remove(&oldest);
        }
        let digest = digest(&id);
        inner.began.insert(digest, (now, caller));
        inner.by_age.insert((now, digest));
        Ok(id)
    }

    /// Who logged in to `id`, while it is a live session of this server.
    pub fn caller(&self, id: &str) -> Option<Caller> {
        self.caller_at(id, Instant::now())
    }

    fn caller_at(&self, id: &str, now: Instant) -> Option<Caller> {
        let inner = self.lock();
        inner
            .began
            .get(&digest(id))
            .filter(|(began, _)| now.saturating_duration_since(*began) < self.lifetime)
            .map(|(_, caller)| caller.clone())
    }

    #[cfg(test)]
    fn holds_at(&self, id: &str, now: Instant) -> bool {
        self.caller_at(id, now).is_some()
    }

    /// Ends `id` (logout); an unknown id is no error.
    pub fn end(&self, id: &str) {
        let digest = digest(id);
        let mut inner = self.lock();
        if let Some((began, _)) = inner.began.remove(&digest) {
            inner.by_age.remove(&(began, digest));
        }
    }

    /// Ends every session of the named token `name` (it was revoked).
    pub fn end_token(&self, name: &str) {
        let mut inner = self.lock();
        let ended: Vec<(Instant, Digest32)> = inner
            .began
            .iter()
            .filter(|(_, (_, caller))| caller.token.as_deref() == Some(name))
            .map(|(digest, (began, _))| (*began, *digest))
            .collect();
        for (began, digest) in ended {
            inner.began.remove(&digest);
            inner.by_age.remove(&(began, digest));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().began.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The maps are consistent between statements: a panic elsewhere
        // while holding the lock cannot leave them half-changed.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, lifetime: Duration) {
        while let Some(&(began, digest)) = self.by_age.first() {
            if now.saturating_duration_since(began) < lifetime {
                break;
            }
            self.by_age.pop_first();
            self.began.remove(&digest);
        }
    }
}

fn digest(id: &str) -> Digest32 {
    Sha256::digest(id.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex_of_256_bits() {
        let sessions = Sessions::default();
        let (a, b) = (
            sessions.begin(Caller::open()).expect("id"),
            sessions.begin(Caller::open()).expect("id"),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(sessions.caller(&a).is_some() && sessions.caller(&b).is_some());
        assert!(sessions.caller("00").is_none());
    }

    #[test]
    fn a_session_ends_at_logout_or_when_its_time_is_up() {
        let sessions = Sessions::new(Duration::from_secs(60), 10);
        let start = Instant::now();
        let ended = sessions.begin_at(start, Caller::open()).expect("id");
        let expiring = sessions.begin_at(start, Caller::open()).expect("id");
        sessions.end(&ended);
        assert!(!sessions.holds_at(&ended, start));
        assert!(sessions.holds_at(&expiring, start + Duration::from_secs(59)));
        assert!(!sessions.holds_at(&expiring, start + Duration::from_secs(60)));
        // Expired ones are dropped as new ones begin.
        sessions
            .begin_at(start + Duration::from_secs(61), Caller::open())
            .expect("id");
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn past_the_cap_the_oldest_session_goes() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let start = Instant::now();
        let ids: Vec<String> = (0..3)
            .map(|i| {
                sessions
                    .begin_at(start + Duration::from_millis(i), Caller::open())
                    .expect("id")
            })
            .collect();
        let now = start + Duration::from_secs(1);
        assert!(!sessions.holds_at(&ids[0], now), "the oldest was evicted");
        assert!(sessions.holds_at(&ids[1], now) && sessions.holds_at(&ids[2], now));
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn a_revoked_token_takes_its_sessions_along() {
        let sessions = Sessions::default();
        let named = |name: &str| Caller {
            token: Some(name.into()),
            role: crate::model::Role::Viewer,
            pools: Vec::new(),
            hash: Some("h".into()),
        };
        let (v1, v1_again, v2) = (
            sessions.begin(named("v1")).expect("id"),
            sessions.begin(named("v1")).expect("id"),
            sessions.begin(named("v2")).expect("id"),
        );
        sessions.end_token("v1");
        assert!(sessions.caller(&v1).is_none() && sessions.caller(&v1_again).is_none());
        assert_eq!(sessions.caller(&v2), Some(named("v2")));
        assert_eq!(sessions.len(), 1);
    }
}
