//! The grid hub's queue: placing waiting new-session requests on free matching slots, and saying why they wait.

use std::time::Duration;

use super::{Allocation, Hub, Placement};
use crate::domain::{EndReason, Presence, Target};
use crate::fleet::GridView;
use crate::grid::caps::NewSessionRequest;
use crate::grid::matching::{DeviceFacts, SlotFacts, candidates, explain_no_match};
use crate::grid::streams::SlotTarget;
use crate::grid::w3c::W3cError;

/// Builds the matcher's view of the farm: every slot of every connected node, with its device.
pub fn slot_facts(
    view: &GridView,
) -> Vec<(
    SlotFacts,
    SlotTarget,
    Option<crate::fleet::DeviceView>,
    u32,
    String,
)> {
    let mut out = Vec::new();
    for n in &view.nodes {
        for s in &n.slots {
            let device = (s.kind == "appium")
                .then(|| {
                    view.devices.iter().find(|d| {
                        d.device.node_id == n.node.id && d.device.serial == s.device_serial
                    })
                })
                .flatten();
            let facts = SlotFacts {
                node_id: n.node.id.clone(),
                slot_id: s.slot_id.clone(),
                site: device
                    .map(|d| d.device.site.clone())
                    .unwrap_or_else(|| n.node.site.clone()),
                advertised: s.capabilities.as_object().cloned().unwrap_or_default(),
                device: device.map(|d| DeviceFacts {
                    id: d.device.id.clone(),
                    serial: d.device.serial.clone(),
                    platform: d.device.platform.clone(),
                    model: d.device.model.clone(),
                    android_version: d.device.android_version.clone(),
                    tags: d.device.tags.clone(),
                }),
            };
            let target = SlotTarget {
                node_id: n.node.id.clone(),
                slot_id: s.slot_id.clone(),
                outbound: n.outbound.clone(),
                whole_bodies: n
                    .node
                    .features
                    .iter()
                    .any(|f| f == farm_proto::FEATURE_HTTP_WHOLE),
            };
            out.push((
                facts,
                target,
                device.cloned(),
                s.max_sessions,
                s.kind.clone(),
            ));
        }
    }
    out
}

impl Hub {
    /// Why a request is still waiting: the matching slots and who holds them.
    pub(super) async fn busy_summary(&self, request: &NewSessionRequest) -> String {
        let view = self.fleet.grid_view().await.unwrap_or_default();
        let slots = slot_facts(&view);
        let facts: Vec<SlotFacts> = slots.iter().map(|s| s.0.clone()).collect();
        let mut seen: Vec<usize> = candidates(&request.sets, &facts)
            .into_iter()
            .map(|c| c.slot)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.is_empty() {
            return explain_no_match(&request.sets, &facts);
        }
        let parts: Vec<String> = seen
            .iter()
            .take(5)
            .map(|&i| {
                let (f, _, device, _, _) = &slots[i];
                let state = match device {
                    Some(d) => match (&d.lease, d.device.presence) {
                        (Some(l), _) => format!("held by {}", l.holder),
                        (None, p) => p.as_str().to_string(),
                    },
                    None => format!(
                        "{} of {} sessions in use",
                        self.slot_use
                            .get(&(f.node_id.clone(), f.slot_id.clone()))
                            .copied()
                            .unwrap_or(0),
                        slots[i].3
                    ),
                };
                format!("{}/{} {state}", f.node_id, f.slot_id)
            })
            .collect();
        format!(
            "{} matching slots, all busy ({})",
            seen.len(),
            parts.join(", ")
        )
    }

    /// Places queued requests, oldest first, on free matching slots.
    pub(super) async fn serve_queue(&mut self) {
        self.queue.retain(|q| !q.reply.is_closed());
        if self.queue.is_empty() {
            return;
        }
        let view = match self.fleet.grid_view().await {
            Ok(v) => v,
            Err(_) => return,
        };
        let slots = slot_facts(&view);
        let facts: Vec<SlotFacts> = slots.iter().map(|s| s.0.clone()).collect();
        let mut taken_now: Vec<usize> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let found = candidates(&self.queue[i].request.sets, &facts);
            if found.is_empty() {
                if let Some(q) = self.queue.remove(i) {
                    let _ = q
                        .reply
                        .send(Err(W3cError::session_not_created(explain_no_match(
                            &q.request.sets,
                            &facts,
                        ))));
                }
                continue;
            }
            let mut placed = None;
            for c in found {
                let (f, target, device, max, kind) = &slots[c.slot];
                let key = (f.node_id.clone(), f.slot_id.clone());
                let used = self.slot_use.get(&key).copied().unwrap_or(0);
                let lease = if kind == "appium" {
                    let Some(d) = device else { continue };
                    if used > 0
                        || taken_now.contains(&c.slot)
                        || d.lease.is_some()
                        || d.device.presence != Presence::Online
                    {
                        continue;
                    }
                    let q = &self.queue[i];
                    match self
                        .fleet
                        .reserve(
                            q.caller.clone(),
                            Target::Device(d.device.id.clone()),
                            Duration::ZERO,
                            Some(self.config.lease_ttl()),
                        )
                        .await
                    {
                        Ok(l) => Some(l),
                        Err(e) => {
                            tracing::debug!(device_id = %d.device.id, error = %e, "device taken meanwhile");
                            taken_now.push(c.slot);
                            continue;
                        }
                    }
                } else {
                    if used >= (*max).max(1) {
                        continue;
                    }
                    None
                };
                let device_id = device
                    .as_ref()
                    .map(|d| d.device.id.clone())
                    .unwrap_or_else(|| format!("{}/{}", f.node_id, f.slot_id));
                placed = Some((
                    key,
                    target.clone(),
                    c.set,
                    lease,
                    device_id,
                    kind.clone(),
                    c.slot,
                ));
                break;
            }
            let Some((key, target, set, lease, device_id, kind, slot_index)) = placed else {
                i += 1;
                continue;
            };
            let Some(q) = self.queue.remove(i) else { break };
            let alloc_id = self.next_alloc;
            self.next_alloc += 1;
            let placement = Placement {
                alloc_id,
                target,
                matched: q.request.sets.get(set).cloned().unwrap_or_default(),
                lease: lease.clone(),
            };
            *self.slot_use.entry(key.clone()).or_default() += 1;
            taken_now.push(slot_index);
            if q.reply.send(Ok(placement.clone())).is_err() {
                self.free_slot(&key);
                if let Some(l) = lease {
                    self.end_lease_later(l.id, EndReason::Released);
                }
                continue;
            }
            self.allocations.insert(
                alloc_id,
                Allocation {
                    ticket: q.ticket,
                    key,
                    caller: q.caller,
                    request: q.request,
                    placement,
                    device_id,
                    kind,
                },
            );
        }
    }
}
