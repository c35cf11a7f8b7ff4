//! The flow-run state machine. The only place that decides whether a state
//! transition happens; `store` only records what this module returns.
//!
//! SCHEDULED (Scheduled | Late) → PENDING (claim only) → RUNNING →
//! COMPLETED | FAILED | CRASHED; CANCELLING → CANCELLED from any non-terminal
//! state. Terminal states are final to workers and to `decide`; only a
//! person's [`retry`] starts a FAILED, CRASHED or CANCELLED run again, as a
//! new attempt that goes back to SCHEDULED and through a claim like any
//! other. A transition carrying an idempotency key
//! already applied to the run is a replay: the caller gets the current state.
//! Only a claim moves SCHEDULED to PENDING, so two workers can never hold
//! one run.
//!
//! While a worker holds a run, a state change must name that worker (409
//! `worker` otherwise; an operator's `force` overrides it): the process
//! runs where the holder is, and an outcome reported from anywhere else
//! would be a guess. A state may be named only by its type's own name
//! (or, for SCHEDULED, `Late`), because lists show names, and a name must
//! not tell another story than its type.
//!
//! A run whose worker went silent keeps its type under the name
//! [`DISCONNECTED`]: its outcome is unknown, not decided. The worker that
//! comes back reports what really happened; only a silence longer than the
//! server's grace makes it CRASHED.

use crate::model::{FlowRun, State, StateType, Timestamp};
use serde::{Deserialize, Serialize};

/// The name of an active run's state while its worker is silent.
pub const DISCONNECTED: &str = "Disconnected";
/// The name of a SCHEDULED run's state once it waited past its time.
pub const LATE: &str = "Late";

/// The names a request may give a state of this type: the type's own, and
/// the names the server gives it too where a client may say the same (a
/// run handed back late is `Late`). A name is what lists and pages show
/// of a state, so it may not tell another story than its type (a CANCELLED
/// run named `Completed`). `Disconnected` is the server's alone: a worker
/// that reports is not silent.
pub fn state_names(state: StateType) -> &'static [&'static str] {
    match state {
        StateType::Scheduled => &["Scheduled", LATE],
        StateType::Pending => &["Pending"],
        StateType::Running => &["Running"],
        StateType::Completed => &["Completed"],
        StateType::Failed => &["Failed"],
        StateType::Crashed => &["Crashed"],
        StateType::Cancelling => &["Cancelling"],
        StateType::Cancelled => &["Cancelled"],
    }
}

/// How many idempotency keys a run remembers.
const KEPT_TRANSITION_KEYS: usize = 16;

/// A request to move a run to another state (from a worker or a person).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transition {
    #[serde(rename = "type")]
    #[schema(value_type = StateType, required = true)]
    pub to: Option<StateType>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// The worker asking; while a worker holds the run, only that one.
    #[serde(default)]
    pub worker: Option<String>,
    /// An operator's override of the holder check (logged). The held run's
    /// process may still run: cancelling asks its worker to stop it.
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub infrastructure_handle: Option<String>,
}

/// Why a transition is refused. The messages name the field of the request
/// at fault where there is one ([`TransitionError::field`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("type: the target state is required")]
    NoTarget,
    /// The requested name is not one of the target type's names.
    #[error("name: {name:?} is not a name of a {to} state; leave it out or use {}", state_names(*.to).join(" or "))]
    NameNotOfType { name: String, to: StateType },
    #[error("flow run {run} is {state}, which is final")]
    Final { run: String, state: StateType },
    #[error("only a claim moves a SCHEDULED run to PENDING")]
    OnlyClaimPends,
    #[error("cannot move flow run {run} from {from} to {to}")]
    NotAllowed {
        run: String,
        from: StateType,
        to: StateType,
    },
    /// Another worker holds the run (`asking`), or nobody was named.
    /// Retry is for runs that ended without success.
    #[error("flow run {run} is {state}; only a FAILED, CRASHED or CANCELLED run can be retried")]
    NotRetryable { run: String, state: StateType },
    /// A worker holds the run: its process may be running.
    #[error("flow run {run} is {state} on worker {}; cancel it, and delete it once it is CANCELLED", worker.as_deref().unwrap_or("(none)"))]
    StillActive {
        run: String,
        state: StateType,
        worker: Option<String>,
    },
    #[error("worker: flow run {run} is held by worker {holder}, {}", match asking {
        Some(asking) => format!("not {asking}"),
        None => "which alone reports its states; cancel it, or set `force: true` to override".into(),
    })]
    HeldByOther {
        run: String,
        holder: String,
        asking: Option<String>,
    },
}

impl TransitionError {
    /// The request's field at fault, if one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            TransitionError::NoTarget
            | TransitionError::OnlyClaimPends
            | TransitionError::NotAllowed { .. } => Some("type"),
            TransitionError::NameNotOfType { .. } => Some("name"),
            TransitionError::HeldByOther { .. } => Some("worker"),
            TransitionError::Final { .. }
            | TransitionError::NotRetryable { .. }
            | TransitionError::StillActive { .. } => None,
        }
    }

    /// Whether the request itself is malformed, rather than refused for the
    /// run's state.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            TransitionError::NoTarget | TransitionError::NameNotOfType { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Record this new version of the run.
    Apply(Box<FlowRun>),
    /// Already done (same idempotency key, or already in that state): nothing to write.
    Replay,
}

fn allowed(from: StateType, to: StateType) -> bool {
    use StateType::*;
    match from {
        Scheduled => matches!(to, Cancelled),
        // A worker may hand back a claim it never started (PENDING → SCHEDULED).
        Pending => matches!(
            to,
            Scheduled | Running | Failed | Crashed | Cancelling | Cancelled
        ),
        Running => matches!(to, Completed | Failed | Crashed | Cancelling | Cancelled),
        Cancelling => matches!(to, Cancelled | Completed | Failed | Crashed),
        Completed | Failed | Crashed | Cancelled => false,
    }
}

/// Decide a transition requested through the API.
pub fn decide(
    run: &FlowRun,
    request: &Transition,
    now: Timestamp,
) -> Result<Decision, TransitionError> {
    let to = request.to.ok_or(TransitionError::NoTarget)?;
    if let Some(name) = &request.name
        && !state_names(to).contains(&name.as_str())
    {
        return Err(TransitionError::NameNotOfType {
            name: name.chars().take(100).collect(),
            to,
        });
    }
    if let Some(key) = &request.idempotency_key
        && run.transition_keys.contains(key)
    {
        return Ok(Decision::Replay);
    }
    let from = run.state.state_type;
    // A report on a disconnected run is news even in the same type: the
    // worker is back and says where the run really is.
    if from == to && to != StateType::Scheduled && run.state.name != DISCONNECTED {
        return Ok(Decision::Replay);
    }
    if from.is_terminal() {
        return Err(TransitionError::Final {
            run: run.id.clone(),
            state: from,
        });
    }
    if from == StateType::Scheduled && to == StateType::Pending {
        return Err(TransitionError::OnlyClaimPends);
    }
    let reconnecting = from == to && run.state.name == DISCONNECTED;
    if !allowed(from, to) && !reconnecting {
        return Err(TransitionError::NotAllowed {
            run: run.id.clone(),
            from,
            to,
        });
    }
    // A held run's process runs on whatever is recorded: a state nobody
    // reported from there would tell a lie about it.
    if let Some(owner) = &run.worker
        && !request.force
        && request.worker.as_deref() != Some(owner.as_str())
    {
        return Err(TransitionError::HeldByOther {
            run: run.id.clone(),
            holder: owner.clone(),
            asking: request.worker.clone(),
        });
    }
    let mut next = run.clone();
    let mut state = State::new(to, now);
    if let Some(name) = &request.name {
        state.name = name.clone();
    }
    state.message = request.message.clone();
    push_state(&mut next, state, now);
    if let Some(key) = &request.idempotency_key {
        remember_key(&mut next, key);
    }
    if request.exit_code.is_some() {
        next.exit_code = request.exit_code;
    }
    if request.infrastructure_handle.is_some() {
        next.infrastructure_handle = request.infrastructure_handle.clone();
    }
    if to == StateType::Scheduled {
        // Handed back: no longer anyone's.
        next.worker = None;
        next.lease_until = None;
    }
    if to.is_terminal() {
        next.lease_until = None;
    }
    Ok(Decision::Apply(Box::new(next)))
}

/// A claim: SCHEDULED → PENDING, owned by `worker` until `lease_until`.
pub fn claim(
    run: &FlowRun,
    worker: &str,
    lease_until: Timestamp,
    now: Timestamp,
) -> Option<FlowRun> {
    if run.state.state_type != StateType::Scheduled {
        return None;
    }
    let mut next = run.clone();
    push_state(&mut next, State::new(StateType::Pending, now), now);
    next.worker = Some(worker.to_string());
    next.lease_until = Some(lease_until);
    Some(next)
}

/// A person cancels: at once when nothing runs yet, through the worker otherwise.
pub fn cancel(run: &FlowRun, now: Timestamp) -> Result<Decision, TransitionError> {
    let to = match run.state.state_type {
        StateType::Scheduled => StateType::Cancelled,
        StateType::Pending | StateType::Running => StateType::Cancelling,
        StateType::Cancelling => return Ok(Decision::Replay),
        terminal => {
            return Err(TransitionError::Final {
                run: run.id.clone(),
                state: terminal,
            });
        }
    };
    let mut next = run.clone();
    let mut state = State::new(to, now);
    state.message = Some("cancelled by request".into());
    push_state(&mut next, state, now);
    Ok(Decision::Apply(Box::new(next)))
}

/// A person retries a run that ended without success: a new attempt of the
/// same run (Prefect's Retry), SCHEDULED and due at once. The history keeps
/// every state of the earlier attempts; what belonged to the last attempt
/// alone goes: its worker and lease, exit code, infrastructure handle, and
/// the idempotency keys its worker sent (a worker's keys name the run and
/// the step, `{id}:running`, so the new attempt's reports would otherwise
/// be taken for replays of the old one's). The run becomes a person's
/// (`auto_scheduled` false): the scheduler's rescheduling never drops it.
/// The attempt count is the number of RUNNING states in the history
/// ([`attempts`]); nothing else is counted.
pub fn retry(run: &FlowRun, now: Timestamp) -> Result<Decision, TransitionError> {
    if !matches!(
        run.state.state_type,
        StateType::Failed | StateType::Crashed | StateType::Cancelled
    ) {
        return Err(TransitionError::NotRetryable {
            run: run.id.clone(),
            state: run.state.state_type,
        });
    }
    let mut next = run.clone();
    let mut state = State::new(StateType::Scheduled, now);
    state.message = Some(format!(
        "retried by request after {} (attempt {})",
        run.state.state_type,
        attempts(run) + 1
    ));
    push_state(&mut next, state, now);
    next.scheduled_at = now;
    next.worker = None;
    next.lease_until = None;
    next.exit_code = None;
    next.infrastructure_handle = None;
    next.transition_keys.clear();
    next.auto_scheduled = false;
    Ok(Decision::Apply(Box::new(next)))
}

/// How many times the run started (entered RUNNING), over all its attempts.
pub fn attempts(run: &FlowRun) -> usize {
    run.history
        .iter()
        .chain(std::iter::once(&run.state))
        .filter(|s| s.state_type == StateType::Running && s.name != DISCONNECTED)
        .count()
}

/// Whether a run may be deleted: not while a worker holds it (PENDING,
/// RUNNING, CANCELLING), whose process may be running and would report on
/// a run that no longer exists. SCHEDULED and final runs may.
pub fn deletable(run: &FlowRun) -> Result<(), TransitionError> {
    if run.state.state_type.is_active() {
        return Err(TransitionError::StillActive {
            run: run.id.clone(),
            state: run.state.state_type,
            worker: run.worker.clone(),
        });
    }
    Ok(())
}

/// SCHEDULED runs still waiting `late_after` past their time are renamed Late.
pub fn mark_late(run: &FlowRun, now: Timestamp, late_after: chrono::Duration) -> Option<FlowRun> {
    let due = run.state.state_type == StateType::Scheduled && run.state.name == "Scheduled";
    if !due || now < run.scheduled_at + late_after {
        return None;
    }
    let mut next = run.clone();
    let mut state = State::new(StateType::Scheduled, now);
    state.name = LATE.into();
    push_state(&mut next, state, now);
    Some(next)
}

/// The worker holding a run went silent: its outcome is unknown until the
/// worker reports again (or the silence outlasts the grace, see
/// [`crash_abandoned`]). The type stays, so nothing else about the run changes.
pub fn disconnect(run: &FlowRun, reason: &str, now: Timestamp) -> Option<FlowRun> {
    if !run.state.state_type.is_active() || run.state.name == DISCONNECTED {
        return None;
    }
    let mut next = run.clone();
    let mut state = State::new(run.state.state_type, now);
    state.name = DISCONNECTED.into();
    state.message = Some(reason.to_string());
    push_state(&mut next, state, now);
    Some(next)
}

/// The worker holding a disconnected run is heard from again: the run is
/// back in its type's plain state until the worker reports more.
pub fn reconnect(run: &FlowRun, now: Timestamp) -> Option<FlowRun> {
    if !run.state.state_type.is_active() || run.state.name != DISCONNECTED {
        return None;
    }
    let mut next = run.clone();
    let mut state = State::new(run.state.state_type, now);
    state.message = Some(format!(
        "worker `{}` is back in contact",
        run.worker.as_deref().unwrap_or("?")
    ));
    push_state(&mut next, state, now);
    Some(next)
}

/// The worker holding a run stayed away past the grace: nothing will report
/// on it any more.
pub fn crash_abandoned(run: &FlowRun, reason: &str, now: Timestamp) -> Option<FlowRun> {
    if !run.state.state_type.is_active() {
        return None;
    }
    let to = if run.state.state_type == StateType::Cancelling {
        StateType::Cancelled
    } else {
        StateType::Crashed
    };
    let mut next = run.clone();
    let mut state = State::new(to, now);
    state.message = Some(reason.to_string());
    push_state(&mut next, state, now);
    next.lease_until = None;
    Some(next)
}

fn push_state(run: &mut FlowRun, state: State, now: Timestamp) {
    let previous = std::mem::replace(&mut run.state, state);
    run.history.push(previous);
    run.updated = now;
}

fn remember_key(run: &mut FlowRun, key: &str) {
    run.transition_keys.push(key.to_string());
    if run.transition_keys.len() > KEPT_TRANSITION_KEYS {
        run.transition_keys.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: StateType) -> FlowRun {
        let now = chrono::Utc::now();
        FlowRun {
            id: "r1".into(),
            name: "n".into(),
            deployment_id: "d".into(),
            deployment: "f/d".into(),
            pool: "p".into(),
            queue: "default".into(),
            parameters: Default::default(),
            job_variables: Default::default(),
            scheduled_at: now,
            state: State::new(state, now),
            history: vec![],
            worker: Some("w1".into()),
            lease_until: None,
            infrastructure_handle: None,
            exit_code: None,
            auto_scheduled: false,
            transition_keys: vec![],
            created: now,
            updated: now,
        }
    }

    fn to(state: StateType) -> Transition {
        Transition {
            to: Some(state),
            worker: Some("w1".into()),
            ..Transition::default()
        }
    }

    #[test]
    fn terminal_states_are_final() {
        let now = chrono::Utc::now();
        for terminal in [
            StateType::Completed,
            StateType::Failed,
            StateType::Crashed,
            StateType::Cancelled,
        ] {
            let final_state = Err(TransitionError::Final {
                run: "r1".into(),
                state: terminal,
            });
            assert_eq!(
                decide(&run(terminal), &to(StateType::Running), now),
                final_state
            );
            assert_eq!(cancel(&run(terminal), now), final_state);
        }
    }

    #[test]
    fn only_a_claim_moves_scheduled_to_pending() {
        let now = chrono::Utc::now();
        assert_eq!(
            decide(&run(StateType::Scheduled), &to(StateType::Pending), now),
            Err(TransitionError::OnlyClaimPends)
        );
        let claimed = claim(&run(StateType::Scheduled), "w2", now, now).expect("claimable");
        assert_eq!(claimed.state.state_type, StateType::Pending);
        assert_eq!(claimed.worker.as_deref(), Some("w2"));
        assert!(
            claim(&claimed, "w3", now, now).is_none(),
            "a claimed run cannot be claimed again"
        );
    }

    #[test]
    fn a_repeated_idempotency_key_is_a_replay() {
        let now = chrono::Utc::now();
        let mut request = to(StateType::Running);
        request.idempotency_key = Some("k1".into());
        let Ok(Decision::Apply(running)) = decide(&run(StateType::Pending), &request, now) else {
            panic!("applies");
        };
        assert_eq!(decide(&running, &request, now), Ok(Decision::Replay));
    }

    #[test]
    fn another_worker_cannot_move_a_claimed_run() {
        let now = chrono::Utc::now();
        let mut request = to(StateType::Running);
        request.worker = Some("intruder".into());
        let refused = decide(&run(StateType::Pending), &request, now).expect_err("refused");
        assert_eq!(refused.field(), Some("worker"));
        assert_eq!(
            refused.to_string(),
            "worker: flow run r1 is held by worker w1, not intruder"
        );
        request.worker = None;
        let refused = decide(&run(StateType::Pending), &request, now).expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "worker: flow run r1 is held by worker w1, which alone reports its states; cancel it, or set `force: true` to override"
        );
    }

    #[test]
    fn a_silent_workers_run_is_disconnected_not_final_and_its_report_counts() {
        let now = chrono::Utc::now();
        let lost = disconnect(&run(StateType::Running), "silent", now).expect("disconnects");
        assert_eq!(lost.state.state_type, StateType::Running);
        assert_eq!(lost.state.name, DISCONNECTED);
        assert!(disconnect(&lost, "silent", now).is_none(), "once");
        let Ok(Decision::Apply(done)) = decide(&lost, &to(StateType::Completed), now) else {
            panic!("the worker's report applies");
        };
        assert_eq!(done.state.state_type, StateType::Completed);
        let Ok(Decision::Apply(back)) = decide(&lost, &to(StateType::Running), now) else {
            panic!("a same-type report renames it back");
        };
        assert_eq!(back.state.name, "Running");
        let back = reconnect(&lost, now).expect("reconnects");
        assert_eq!(back.state.name, "Running");
        assert!(reconnect(&back, now).is_none());
    }

    #[test]
    fn retry_is_a_new_attempt_of_an_unsuccessful_run_only() {
        let now = chrono::Utc::now();
        for state in [
            StateType::Scheduled,
            StateType::Pending,
            StateType::Running,
            StateType::Cancelling,
            StateType::Completed,
        ] {
            assert!(
                matches!(
                    retry(&run(state), now),
                    Err(TransitionError::NotRetryable { .. })
                ),
                "{state}"
            );
        }
        let mut failed = run(StateType::Running);
        failed.transition_keys = vec!["r1:running".into(), "r1:final".into()];
        failed.exit_code = Some(1);
        failed.infrastructure_handle = Some("{\"pid\":1}".into());
        failed.auto_scheduled = true;
        push_state(&mut failed, State::new(StateType::Failed, now), now);
        assert_eq!(attempts(&failed), 1);
        let later = now + chrono::Duration::seconds(30);
        let Ok(Decision::Apply(again)) = retry(&failed, later) else {
            panic!("a FAILED run is retried");
        };
        assert_eq!(again.state.state_type, StateType::Scheduled);
        assert_eq!(again.state.name, "Scheduled");
        assert_eq!(again.scheduled_at, later, "due at once");
        assert_eq!(
            again.history.len(),
            failed.history.len() + 1,
            "history kept"
        );
        assert_eq!(again.history.last(), Some(&failed.state));
        assert!(again.worker.is_none() && again.exit_code.is_none());
        assert!(again.infrastructure_handle.is_none() && !again.auto_scheduled);
        // The new attempt's worker reports with the same keys: they apply.
        let mut running = to(StateType::Running);
        running.idempotency_key = Some("r1:running".into());
        let claimed = claim(&again, "w1", later, later).expect("claimable again");
        let Ok(Decision::Apply(started)) = decide(&claimed, &running, later) else {
            panic!("the new attempt's RUNNING is not a replay");
        };
        assert_eq!(attempts(&started), 2);
        assert!(deletable(&started).is_err(), "not while it runs");
        assert!(deletable(&failed).is_ok() && deletable(&again).is_ok());
    }

    #[test]
    fn cancel_is_immediate_only_before_a_claim() {
        let now = chrono::Utc::now();
        let Ok(Decision::Apply(c)) = cancel(&run(StateType::Scheduled), now) else {
            panic!()
        };
        assert_eq!(c.state.state_type, StateType::Cancelled);
        let Ok(Decision::Apply(c)) = cancel(&run(StateType::Running), now) else {
            panic!()
        };
        assert_eq!(c.state.state_type, StateType::Cancelling);
    }
}
