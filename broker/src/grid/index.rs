//! The running WebDriver sessions as command handlers see them: looked up without a trip to the hub.
//!
//! The hub adds a session when its slot has created it and removes it when it
//! ends; every command looks its session up here, checks the caller and marks
//! it busy (`Activity`). The idle check and the removal of an idle session
//! happen under the same lock as a command's lookup, so a command either
//! finds its session busy (and it is not idle) or finds it gone with the reason.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use super::streams::SlotTarget;
use super::w3c::W3cError;
use crate::domain::{Caller, Role};

/// How many ended session ids are remembered, to say why a late command fails.
const REMEMBER_ENDED: usize = 4096;

/// What commands do to a session: how many are in flight and when the last one began or ended.
#[derive(Debug)]
pub struct Activity {
    inflight: AtomicU32,
    last: Mutex<Instant>,
}

impl Activity {
    fn new(now: Instant) -> Activity {
        Activity {
            inflight: AtomicU32::new(0),
            last: Mutex::new(now),
        }
    }

    fn touch(&self, now: Instant) {
        if let Ok(mut last) = self.last.lock() {
            *last = (*last).max(now);
        }
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Acquire)
    }

    /// When a command last began or ended.
    pub fn last(&self) -> Instant {
        self.last
            .lock()
            .map(|l| *l)
            .unwrap_or_else(|e| *e.into_inner())
    }

    /// A command on the session has finished (its answer was delivered or dropped).
    pub fn finish(&self) {
        let _ = self
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.touch(Instant::now());
    }
}

struct Entry {
    owner: Caller,
    target: SlotTarget,
    activity: Arc<Activity>,
}

#[derive(Default)]
struct Table {
    live: HashMap<String, Entry>,
    ended: HashMap<String, String>,
    ended_order: VecDeque<String>,
}

/// The shared table of running sessions (cheap to clone).
#[derive(Clone, Default)]
pub struct SessionIndex {
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for SessionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionIndex")
    }
}

impl SessionIndex {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session the slot has created; false if the id is already running.
    pub fn insert(&self, id: &str, owner: Caller, target: SlotTarget) -> Option<Arc<Activity>> {
        let mut table = self.lock();
        if table.live.contains_key(id) {
            return None;
        }
        let activity = Arc::new(Activity::new(Instant::now()));
        table.live.insert(
            id.to_string(),
            Entry {
                owner,
                target,
                activity: activity.clone(),
            },
        );
        Some(activity)
    }

    /// Starts one command: the caller must own the session (or be an admin).
    pub fn begin(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<(SlotTarget, Arc<Activity>), W3cError> {
        let table = self.lock();
        let Some(entry) = table.live.get(id) else {
            return Err(match table.ended.get(id) {
                Some(why) => W3cError::invalid_session_id(format!("session {id} has ended: {why}")),
                None => W3cError::invalid_session_id(format!(
                    "no session {id} on this grid; create one with POST /session"
                )),
            });
        };
        if entry.owner.name != caller.name && caller.role != Role::Admin {
            return Err(W3cError::forbidden(format!(
                "session {id} belongs to {}; only its owner or an admin may drive it",
                entry.owner.name
            )));
        }
        entry.activity.inflight.fetch_add(1, Ordering::AcqRel);
        entry.activity.touch(Instant::now());
        Ok((entry.target.clone(), entry.activity.clone()))
    }

    /// Removes a session and remembers why it ended (`why` is for the client).
    pub fn remove(&self, id: &str, why: String) -> bool {
        let mut table = self.lock();
        let found = table.live.remove(id).is_some();
        if found {
            remember(&mut table, id, why);
        }
        found
    }

    /// Removes every session with no command in flight and none since `idle_since`; returns their ids.
    pub fn remove_idle(&self, idle_since: Instant, why: &str) -> Vec<String> {
        let mut table = self.lock();
        let ids: Vec<String> = table
            .live
            .iter()
            .filter(|(_, e)| e.activity.inflight() == 0 && e.activity.last() <= idle_since)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            table.live.remove(id);
            remember(&mut table, id, why.to_string());
        }
        ids
    }
}

fn remember(table: &mut Table, id: &str, why: String) {
    if table.ended.insert(id.to_string(), why).is_none() {
        table.ended_order.push_back(id.to_string());
    }
    while table.ended_order.len() > REMEMBER_ENDED {
        if let Some(old) = table.ended_order.pop_front() {
            table.ended.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caller(name: &str, role: Role) -> Caller {
        Caller {
            name: name.into(),
            role,
        }
    }

    fn target() -> SlotTarget {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        SlotTarget {
            node_id: "n1".into(),
            slot_id: "browser".into(),
            outbound: tx.downgrade(),
            whole_bodies: true,
        }
    }

    #[tokio::test]
    async fn only_the_owner_or_an_admin_drives_a_session() {
        let index = SessionIndex::default();
        assert!(
            index
                .insert("s1", caller("alice", Role::User), target())
                .is_some()
        );
        assert!(
            index
                .insert("s1", caller("bob", Role::User), target())
                .is_none()
        );
        assert!(index.begin("s1", &caller("alice", Role::User)).is_ok());
        assert!(index.begin("s1", &caller("root", Role::Admin)).is_ok());
        let err = index
            .begin("s1", &caller("bob", Role::User))
            .expect_err("bob does not own s1");
        assert!(err.message.contains("belongs to alice"), "{}", err.message);
        let err = index
            .begin("nope", &caller("alice", Role::User))
            .expect_err("unknown");
        assert_eq!(err.error, "invalid session id");
    }

    #[tokio::test]
    async fn a_busy_session_is_never_idle_and_a_removed_one_says_why() {
        let index = SessionIndex::default();
        let alice = caller("alice", Role::User);
        index.insert("s1", alice.clone(), target());
        index.insert("s2", alice.clone(), target());
        let (_, busy) = index.begin("s1", &alice).expect("s1");
        let an_hour = Duration::from_secs(3600);
        // Nothing has been quiet for an hour.
        let hour_ago = Instant::now().checked_sub(an_hour).expect("clock");
        assert!(index.remove_idle(hour_ago, "idle").is_empty());
        // Everything counts as quiet, but s1 has a command in flight.
        let later = Instant::now() + an_hour;
        assert_eq!(
            index.remove_idle(later, "idle for 5 s"),
            vec!["s2".to_string()]
        );
        let err = index.begin("s2", &alice).expect_err("s2 ended");
        assert!(
            err.message.contains("has ended: idle for 5 s"),
            "{}",
            err.message
        );
        // s1's command finishes: the idle clock restarts from then.
        let before = Instant::now();
        busy.finish();
        assert_eq!(busy.inflight(), 0);
        assert!(busy.last() >= before);
        assert_eq!(index.remove_idle(later, "idle"), vec!["s1".to_string()]);
        assert!(!index.remove("s1", "deleted".into()));
    }
}
