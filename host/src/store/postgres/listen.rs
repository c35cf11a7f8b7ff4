//! Telling the other replicas of this one's changes, and following theirs.

use super::tls::Target;
use super::{DbErrorText, Inner, Waiters};
use crate::events::Change;
use crate::store::Committed;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};
use tokio_postgres::AsyncMessage;

const CHANNEL: &str = "host_changes";
/// How often the listener looks for changes even without a notification
/// (one can be lost while its connection is re-established).
const CATCH_UP_EVERY: Duration = Duration::from_secs(1);
/// Under load, how often a replica announces its commits at most. Each
/// notification wakes every listening replica, and a `NOTIFY` inside each
/// batch (~1,000/s) cost three replicas ~5% of their claims against one
/// (docs/decisions/2026-11-24-commits-announced-outside-the-batch.md).
/// The most an announcement waits, far under the 100 ms a long-poll on
/// another replica may take to wake.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(10);
/// How long a server listens on after its last wait for changes ended: a
/// worker's long-polls follow each other closely.
const STOP_LISTENING_AFTER: Duration = Duration::from_secs(5);
/// The newest change after $1, and whether another replica made any.
const LAST_CHANGE: &str = "SELECT max(seq), bool_or(replica <> $2) FROM changes WHERE seq > $1";
/// Other replicas' payloads only: this one's are not even read from disk.
const CHANGES_AFTER: &str = "SELECT seq, CASE WHEN replica <> $2 THEN payload END FROM changes \
                             WHERE seq > $1 ORDER BY seq LIMIT 1000";

/// Feeds other servers' committed changes into this one, from `last` on,
/// reconnecting as long as the store lives.
pub(super) async fn listen(
    inner: std::sync::Weak<Inner>,
    waiters: std::sync::Arc<Waiters>,
    mut last: i64,
) {
    loop {
        let Some(config) = inner.upgrade().map(|i| i.target.clone()) else {
            return;
        };
        match listen_once(&inner, &waiters, &config, &mut last).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "change listener lost its connection; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// What a notification says: who committed, what kinds of change, and the
/// newest of its rows in `changes`.
pub(super) struct Notice {
    pub(super) replica: String,
    pub(super) kinds: Committed,
    pub(super) seq: i64,
}

impl Notice {
    /// `{replica} {kinds}- {seq}`.
    fn text(&self) -> String {
        let records = if self.kinds.records { "r" } else { "" };
        let logs = if self.kinds.logs { "l" } else { "" };
        format!("{} {records}{logs}- {}", self.replica, self.seq)
    }

    fn parse(text: &str) -> Option<Notice> {
        let mut parts = text.split(' ');
        let (replica, kinds, seq) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Notice {
            replica: replica.to_string(),
            kinds: Committed {
                records: kinds.contains('r'),
                logs: kinds.contains('l'),
            },
            seq: seq.parse().ok()?,
        })
    }

    /// Says `later` as well: both kinds, up to the newer change.
    fn absorb(&mut self, later: Notice) {
        self.kinds = self.kinds.union(later.kinds);
        self.seq = self.seq.max(later.seq);
        self.replica = later.replica;
    }
}

/// Sends this replica's notifications once their batches have committed,
/// from outside the write lock: the first after a quiet spell at once,
/// then at most one per [`ANNOUNCE_EVERY`] for all committed meanwhile.
pub(super) async fn announce(
    inner: std::sync::Weak<Inner>,
    mut committed: tokio::sync::mpsc::UnboundedReceiver<Notice>,
) {
    while let Some(mut notice) = committed.recv().await {
        while let Ok(later) = committed.try_recv() {
            notice.absorb(later);
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let sent = async {
            let client = inner.pool.get().await.map_err(|e| e.to_string())?;
            let notify = client
                .prepare_cached("SELECT pg_notify($1, $2)")
                .await
                .map_err(|e| DbErrorText(&e).to_string())?;
            client
                .execute(&notify, &[&CHANNEL, &notice.text()])
                .await
                .map_err(|e| DbErrorText(&e).to_string())
        };
        // The listeners' catch-up finds an unannounced change within a second.
        if let Err(error) = sent.await {
            tracing::debug!(%error, seq = notice.seq, "cannot announce a commit");
        }
        drop(inner);
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

/// Answers `Ok` once the store is gone, an error when the connection is.
///
/// While somebody reads this server's event stream, the listener reads
/// the other servers' changes and publishes them. While nobody does, the
/// notifications alone wake the long-polls, and the changes themselves are
/// not read (most of the listener's work, and of the database's for it).
/// While nobody on this server waits for changes at all, it does not even
/// listen (every notification would wake it and its PostgreSQL backend
/// for nobody), and looks once a second as it does when a notification
/// may have been lost; a wait that begins has it listen again and catch
/// up at once.
async fn listen_once(
    inner: &std::sync::Weak<Inner>,
    waiters: &Waiters,
    target: &Target,
    last: &mut i64,
) -> Result<(), String> {
    let text = |e: tokio_postgres::Error| DbErrorText(&e).to_string();
    let (client, mut connection) = target.connect().await.map_err(text)?;
    let (notified, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(news)) => {
                    let _ = notified.send(news.payload().to_string());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    set_listening(&client, true).await.map_err(text)?;
    let changes_after = client.prepare(CHANGES_AFTER).await.map_err(text)?;
    let last_change = client.prepare(LAST_CHANGE).await.map_err(text)?;
    let Some(me) = inner.upgrade().map(|i| i.replica.clone()) else {
        return Ok(());
    };
    // Listening first, then reading: nothing committed in between is missed.
    let mut catching_up = true;
    let mut news: Option<Notice> = None;
    let (mut listening, mut waited_at, mut began) = (true, Instant::now(), 0);
    loop {
        if catching_up || news.is_some() {
            let Some(inner) = inner.upgrade() else {
                return Ok(());
            };
            if !inner.events.skip_if_unwatched() {
                read_changes(&client, &changes_after, &me, last, &inner)
                    .await
                    .map_err(text)?;
            } else if let Some(notice) = news.take() {
                inner.wake(notice.kinds);
                *last = (*last).max(notice.seq);
            } else {
                // The visible rows of `changes` are a prefix of `seq` (batches
                // commit in lock order), so all up to the last one are seen.
                let row = client
                    .query_one(&last_change, &[&*last, &me])
                    .await
                    .map_err(text)?;
                if let Some(newest) = row.get::<_, Option<i64>>(0) {
                    *last = newest;
                    if row.get::<_, Option<bool>>(1) == Some(true) {
                        inner.wake(Committed::ANY);
                    }
                }
            }
        }
        (catching_up, news) = (false, None);
        let catch_up = tokio::time::sleep(CATCH_UP_EVERY);
        tokio::pin!(catch_up);
        while news.is_none() && !catching_up {
            tokio::select! {
                text = notifications.recv() => {
                    let text = text.ok_or("the connection closed")?;
                    news = merge(news, Notice::parse(&text), &me);
                    while let Ok(text) = notifications.try_recv() {
                        news = merge(news, Notice::parse(&text), &me);
                    }
                }
                () = waiters.arrived.notified(), if !listening => {
                    if waiters.any() {
                        set_listening(&client, true).await.map_err(text)?;
                        (listening, waited_at, catching_up) = (true, Instant::now(), true);
                    }
                }
                () = &mut catch_up => {
                    if client.is_closed() {
                        return Err("the connection closed".into());
                    }
                    let seen = waiters.began.load(SeqCst);
                    if waiters.any() || seen != began {
                        (waited_at, began) = (Instant::now(), seen);
                    }
                    let wanted = waited_at.elapsed() < STOP_LISTENING_AFTER;
                    if wanted != listening {
                        set_listening(&client, wanted).await.map_err(text)?;
                        listening = wanted;
                    }
                    catching_up = true;
                }
            }
        }
    }
}

/// Has this connection receive the replicas' notifications, or stop.
async fn set_listening(
    client: &tokio_postgres::Client,
    on: bool,
) -> Result<(), tokio_postgres::Error> {
    let verb = if on { "LISTEN" } else { "UNLISTEN" };
    client.batch_execute(&format!("{verb} {CHANNEL}")).await
}

/// Other servers' news, taken together; this server's own is not news.
fn merge(news: Option<Notice>, notice: Option<Notice>, me: &str) -> Option<Notice> {
    match (news, notice) {
        (news, Some(notice)) if notice.replica != me => Some(match news {
            Some(mut earlier) => {
                earlier.absorb(notice);
                earlier
            }
            None => notice,
        }),
        (news, _) => news,
    }
}

/// Publishes the other servers' changes after `last`, and moves it on.
async fn read_changes(
    client: &tokio_postgres::Client,
    changes_after: &tokio_postgres::Statement,
    me: &str,
    last: &mut i64,
    inner: &Inner,
) -> Result<(), tokio_postgres::Error> {
    loop {
        let rows = client.query(changes_after, &[&*last, &me]).await?;
        for row in &rows {
            *last = row.get(0);
            let Some(payload) = row.get::<_, Option<&str>>(1) else {
                continue;
            };
            match serde_json::from_str::<Vec<Change>>(payload) {
                Ok(changes) => inner.publish_remote(changes),
                Err(error) => tracing::warn!(%error, seq = *last, "unreadable change record"),
            }
        }
        if rows.len() < 1000 {
            return Ok(());
        }
    }
}
