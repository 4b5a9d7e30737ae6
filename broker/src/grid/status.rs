//! `GET /status` in the shape Selenium Grid 4 clients read: ready flag, nodes, slots and their sessions (pure).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::matching::{SlotFacts, effective_caps};
use super::streams::SlotTarget;
use crate::fleet::DeviceView;

/// What the hub knows, for one `/status` answer.
#[derive(Debug, Default)]
pub struct StatusInput {
    /// (facts, target, device, max_sessions, kind) per slot, as `hub::slot_facts` builds them.
    pub slots: Vec<(SlotFacts, SlotTarget, Option<DeviceView>, u32, String)>,
    /// (node id, slot id) -> running (session id, owner).
    pub sessions: HashMap<(String, String), Vec<(String, String)>>,
    pub queued: usize,
}

/// The `/status` body. A browser slot with N sessions shows as N Grid slots (`SLOT#i`).
pub fn status_json(input: &StatusInput) -> Value {
    let mut nodes: Vec<(String, Vec<Value>)> = Vec::new();
    for (facts, _, device, max, kind) in &input.slots {
        let key = (facts.node_id.clone(), facts.slot_id.clone());
        let running = input.sessions.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let stereotype = Value::Object(effective_caps(facts));
        let copies = if kind == "appium" {
            1
        } else {
            (*max).clamp(1, 64)
        };
        let held_by_other =
            device.as_ref().and_then(|d| d.lease.as_ref()).is_some() && running.is_empty();
        let list = match nodes.iter_mut().find(|(id, _)| *id == facts.node_id) {
            Some((_, list)) => list,
            None => {
                nodes.push((facts.node_id.clone(), Vec::new()));
                let Some((_, list)) = nodes.last_mut() else {
                    continue;
                };
                list
            }
        };
        for i in 0..copies {
            let id = if copies == 1 {
                facts.slot_id.clone()
            } else {
                format!("{}#{i}", facts.slot_id)
            };
            let session = running.get(i as usize).map(|(sid, owner)| {
                json!({"sessionId": sid, "stereotype": stereotype, "capabilities": stereotype, "owner": owner})
            });
            list.push(json!({
                "id": {"hostId": facts.node_id, "id": id},
                "stereotype": stereotype,
                "session": session,
                "lastStarted": "1970-01-01T00:00:00Z",
                "farm:heldByLiveUser": held_by_other,
            }));
        }
    }
    let ready = !nodes.is_empty();
    let message = if ready {
        format!(
            "farm grid ready: {} slots on {} nodes, {} requests queued",
            input.slots.len(),
            nodes.len(),
            input.queued
        )
    } else {
        "farm grid not ready: no node offers WebDriver slots".to_string()
    };
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|(id, slots)| {
            let max = slots.len();
            json!({
                "id": id,
                "uri": format!("farm-node://{id}"),
                "availability": "UP",
                "maxSessions": max,
                "slots": slots,
            })
        })
        .collect();
    json!({"value": {"ready": ready, "message": message, "nodes": nodes, "farm:queued": input.queued}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_farm_is_not_ready() {
        let v = status_json(&StatusInput::default());
        assert_eq!(v["value"]["ready"], false);
        assert_eq!(v["value"]["nodes"], json!([]));
    }
}
