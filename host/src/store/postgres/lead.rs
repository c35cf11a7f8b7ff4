//! The lead, and whether this replica reaches its database at all.
//!
//! A task of its own (not the scheduler's loop, whose upkeep may wait on
//! the write lock) holds or tries to take the session-level lead lock once
//! a second, on a connection of its own. The leader refreshes the one-row
//! `leader` table (where its API is, and `now()` by the database's clock);
//! the others read it, and forward their API writes there only while it
//! was refreshed within [`FRESH`]: a leader that is paused or cut off from
//! the database stops being written to within seconds, and every replica
//! writes itself (each batch under the write lock, so that is correct).
//!
//! A round that cannot reach the database within [`ROUND_DEADLINE`] gives
//! up the lead (the connection is dropped; PostgreSQL ends its session,
//! and frees the lock, once it notices: see [`LEAD_SESSION`]) and marks the
//! database lost, which health reports and the writer and reads act on.

use super::{DbErrorText, Inner, LEAD_LOCK};
use std::sync::Weak;
use std::time::{Duration, Instant};

/// How often the lead is held or sought, and the leader row refreshed.
const EVERY: Duration = Duration::from_secs(1);
/// A round (connecting included) that takes longer means the database is
/// out of reach: these statements take a millisecond.
const ROUND_DEADLINE: Duration = Duration::from_secs(3);
/// How old a leader row may be and still be written to, by the database's
/// clock (so replicas' clocks do not matter): three missed refreshes.
const FRESH: &str = "3 seconds";
/// The leader says where its API is, and that it is there now.
const SET_LEADER: &str = "UPDATE leader SET url = $1, at = now()";
/// The leader, when it said so lately.
const LEADER: &str = "SELECT url FROM leader WHERE at > now() - $1::text::interval";
/// Set on the lead connection. A paused or partitioned replica cannot let
/// go of the lock itself, and a black-holed connection looks alive to
/// PostgreSQL: a session idle past 6 s (the refresh comes every second) is
/// ended by the server, and the lock passes on. The keepalives find a
/// peer that vanished (a machine gone) while a statement runs.
const LEAD_SESSION: &str = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
                            SET tcp_keepalives_count = 3";
/// PostgreSQL 14 and later; an older server keeps the lock until the
/// keepalives give up on the connection.
const IDLE_SESSION: &str = "SET idle_session_timeout = '6s'";
/// How often the leader trims the change log, and what it keeps: far
/// longer than the listeners lag.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE: &str = "DELETE FROM changes WHERE at < now() - interval '10 minutes'";

/// What a round found.
enum Round {
    Leads,
    /// Another replica leads; where it says its API is (when it said so
    /// lately and says anything).
    Follows(Option<String>),
}

/// Holds or seeks the lead once a second while the store lives.
pub(super) async fn keep_lead(inner: Weak<Inner>) {
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lead: Option<(tokio_postgres::Client, bool)> = None;
    let mut pruned: Option<Instant> = None;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let round = match tokio::time::timeout(ROUND_DEADLINE, round(&inner, &mut lead)).await {
            Ok(round) => round,
            Err(_) => Err(format!("no answer within {ROUND_DEADLINE:?}")),
        };
        if round.is_err() {
            // Gives up the lead: the session ends as soon as PostgreSQL
            // hears of it (at once when the network lets it through).
            lead = None;
        }
        if matches!(round, Ok(Round::Leads)) && pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY)
        {
            pruned = Some(Instant::now());
            // On a pooled connection: a long trim must not look like a
            // database that does not answer.
            let pool = inner.pool.clone();
            tokio::spawn(async move {
                if let Ok(client) = pool.get().await {
                    let _ = client.execute(PRUNE, &[]).await;
                }
            });
        }
        inner.lead_found(round);
    }
}

/// One round: the lead lock held or sought, the leader row refreshed or
/// read. A connection that broke since the last round (the server ended
/// it while this replica was paused) is replaced once before the round
/// counts as failed.
async fn round(
    inner: &Inner,
    lead: &mut Option<(tokio_postgres::Client, bool)>,
) -> Result<Round, String> {
    let mut last_error = String::new();
    for _ in 0..2 {
        if lead.as_ref().is_some_and(|(client, _)| client.is_closed()) {
            tracing::warn!(replica = %inner.replica, "lost the connection holding the lead");
            *lead = None;
        }
        if lead.is_none() {
            *lead = Some((connect(inner).await?, false));
        }
        let Some((client, held)) = lead.as_mut() else {
            continue;
        };
        match round_on(inner, client, held).await {
            Ok(round) => return Ok(round),
            Err(error) => {
                last_error = DbErrorText(&error).to_string();
                *lead = None;
            }
        }
    }
    Err(last_error)
}

async fn connect(inner: &Inner) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = inner
        .target
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", DbErrorText(&e)))?;
    tokio::spawn(connection);
    client
        .batch_execute(LEAD_SESSION)
        .await
        .map_err(|e| DbErrorText(&e).to_string())?;
    if let Err(error) = client.batch_execute(IDLE_SESSION).await {
        tracing::debug!(error = %DbErrorText(&error), "the database cannot end idle sessions; the lead passes on only when the connection is seen to drop");
    }
    Ok(client)
}

async fn round_on(
    inner: &Inner,
    client: &tokio_postgres::Client,
    held: &mut bool,
) -> Result<Round, tokio_postgres::Error> {
    if !*held {
        *held = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEAD_LOCK])
            .await?
            .get(0);
        if *held {
            tracing::info!(replica = %inner.replica, "leading the database's upkeep");
        }
    }
    let own = inner.advertised.as_ref();
    if *held {
        // Empty when this one does not say: the others then write
        // themselves rather than to a leader that is gone.
        client
            .execute(SET_LEADER, &[&own.map_or("", String::as_str)])
            .await?;
        return Ok(Round::Leads);
    }
    let writer = client
        .query_opt(LEADER, &[&FRESH])
        .await?
        .map(|row| row.get::<_, String>(0))
        .filter(|url| !url.is_empty() && Some(url) != own);
    Ok(Round::Follows(writer))
}

impl Inner {
    /// Takes in what a round found: whether this replica leads, where
    /// writes go, whether the database is in reach.
    fn lead_found(&self, round: Result<Round, String>) {
        use std::sync::atomic::Ordering::SeqCst;
        let (leading, writer) = match &round {
            Ok(Round::Leads) => (true, None),
            Ok(Round::Follows(writer)) => (false, writer.clone()),
            Err(_) => (false, None),
        };
        if self.leading.swap(leading, SeqCst) && !leading {
            tracing::warn!(replica = %self.replica, "no longer leading");
        }
        if let Ok(mut address) = self.writer_address.lock() {
            if *address != writer {
                tracing::info!(replica = %self.replica, writer = ?writer, "API writes now go to");
            }
            *address = writer;
        }
        if let Ok(mut lost) = self.lost.lock() {
            match round {
                Ok(_) => {
                    if lost.take().is_some() {
                        tracing::info!(replica = %self.replica, "the database is in reach again");
                    }
                }
                Err(reason) => {
                    if lost.is_none() {
                        tracing::error!(replica = %self.replica, %reason, "lost the database: gave up the lead; writes and reads here fail until it is back");
                        *lost = Some(reason);
                    }
                }
            }
        }
    }
}
