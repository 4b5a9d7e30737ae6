//! The capability matcher: which slots can serve a new-session request (pure, property-tested).
//!
//! A slot's effective capabilities are what it advertises plus its device's
//! inventory facts (platform, Android version, model, serial, site, tags).
//! Matching keys and their rules (broker/src/grid/GRID.md has the user-facing version):
//!
//! | requested key | matches when |
//! |---|---|
//! | `platformName` | equal, case-insensitive, to the slot's (`any` matches all) |
//! | `browserName` | equal, case-insensitive, to the slot's (a slot without one matches only an empty name) |
//! | `browserVersion` | the version spec (`versions.rs`) holds, when the slot advertises one |
//! | `appium:automationName` | equal, case-insensitive, to the slot's; any, on a device slot that advertises none |
//! | `appium:platformVersion` | the version spec holds for the slot's (or device's) version |
//! | `appium:deviceName` | equal, case-insensitive, to the advertised name, the model, the device id or its serial |
//! | `appium:udid` | the device's adb serial or its id (hardware serial) |
//! | `farm:site` | the device's (or node's) site |
//! | `farm:pool` | a tag of the device (pools are not modelled yet) |
//! | `farm:tags` | every tag listed is a tag of the device |
//!
//! Every other key is not matched: it passes through to the slot unchanged.

use serde_json::Value;

use super::caps::Caps;
use super::versions::VersionSpec;

/// The device behind an appium slot, as the inventory knows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceFacts {
    pub id: String,
    pub serial: String,
    pub platform: String,
    pub model: String,
    pub android_version: String,
    pub tags: Vec<String>,
}

/// One slot as the matcher sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlotFacts {
    pub node_id: String,
    pub slot_id: String,
    pub site: String,
    pub advertised: Caps,
    pub device: Option<DeviceFacts>,
}

/// A (capability set, slot) pair that matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub set: usize,
    pub slot: usize,
}

fn advertised<'a>(slot: &'a SlotFacts, key: &str) -> Option<&'a str> {
    slot.advertised.get(key).and_then(Value::as_str)
}

/// The slot's capabilities with its device's facts filled in (what `/status` shows as the stereotype).
pub fn effective_caps(slot: &SlotFacts) -> Caps {
    let mut caps = slot.advertised.clone();
    if let Some(d) = &slot.device {
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() && !caps.contains_key(k) {
                caps.insert(k.to_string(), Value::String(v.to_string()));
            }
        };
        put(
            "platformName",
            if d.platform.is_empty() {
                "Android"
            } else {
                &d.platform
            },
        );
        put("appium:platformVersion", &d.android_version);
        put("appium:deviceName", &d.model);
        put("appium:udid", &d.serial);
    }
    if !slot.site.is_empty() {
        caps.insert("farm:site".into(), Value::String(slot.site.clone()));
    }
    if let Some(d) = slot.device.as_ref().filter(|d| !d.tags.is_empty()) {
        caps.insert(
            "farm:tags".into(),
            d.tags.iter().cloned().map(Value::String).collect(),
        );
    }
    caps
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn requested_tags(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Why `slot` cannot serve `caps`, or None when it can.
pub fn mismatch(caps: &Caps, slot: &SlotFacts) -> Option<String> {
    let device = slot.device.as_ref();
    let tags: &[String] = device.map(|d| d.tags.as_slice()).unwrap_or(&[]);
    for (key, value) in caps {
        let want = value.as_str().unwrap_or("");
        let ok = match key.as_str() {
            "platformName" => {
                let has = advertised(slot, key).map(str::to_string).or_else(|| {
                    device.map(|d| {
                        if d.platform.is_empty() {
                            "Android".to_string()
                        } else {
                            d.platform.clone()
                        }
                    })
                });
                eq_ci(want, "any") || has.is_some_and(|h| eq_ci(&h, want))
            }
            "browserName" => {
                want.is_empty() || advertised(slot, key).is_some_and(|h| eq_ci(h, want))
            }
            "appium:automationName" => match advertised(slot, key) {
                Some(h) => eq_ci(h, want),
                None => device.is_some(),
            },
            "browserVersion" | "appium:platformVersion" => {
                let has = advertised(slot, key).map(str::to_string).or_else(|| {
                    (key == "appium:platformVersion")
                        .then(|| device.map(|d| d.android_version.clone()))
                        .flatten()
                });
                match (VersionSpec::parse(want), has) {
                    (Ok(spec), Some(h)) => spec.matches(&h),
                    (Ok(spec), None) => key == "browserVersion" && spec.matches("latest"),
                    (Err(_), _) => false,
                }
            }
            "appium:deviceName" => {
                advertised(slot, key).is_some_and(|h| eq_ci(h, want))
                    || device
                        .is_some_and(|d| eq_ci(&d.model, want) || d.id == want || d.serial == want)
            }
            "appium:udid" => {
                advertised(slot, key) == Some(want)
                    || device.is_some_and(|d| d.serial == want || d.id == want)
            }
            "farm:site" => slot.site == want,
            "farm:pool" => tags.iter().any(|t| t == want),
            "farm:tags" => requested_tags(value)
                .iter()
                .all(|t| tags.iter().any(|h| h == t)),
            _ => true,
        };
        if !ok {
            let has = effective_caps(slot)
                .get(key)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "nothing".to_string());
            return Some(format!("{key} wants {value}, slot has {has}"));
        }
    }
    None
}

/// Every matching (set, slot) pair: sets in `firstMatch` order, slots in the given order.
pub fn candidates(sets: &[Caps], slots: &[SlotFacts]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (si, set) in sets.iter().enumerate() {
        for (i, slot) in slots.iter().enumerate() {
            if mismatch(set, slot).is_none() {
                out.push(Candidate { set: si, slot: i });
            }
        }
    }
    out
}

/// Why nothing in the farm could serve `sets`: a few slots with their first mismatch.
pub fn explain_no_match(sets: &[Caps], slots: &[SlotFacts]) -> String {
    if slots.is_empty() {
        return "the farm has no WebDriver slots (no node with --appium or --chromedriver is connected)".into();
    }
    let mut reasons: Vec<String> = slots
        .iter()
        .take(5)
        .filter_map(|s| {
            let why = sets.first().and_then(|set| mismatch(set, s))?;
            Some(format!("{}/{}: {why}", s.node_id, s.slot_id))
        })
        .collect();
    if slots.len() > 5 {
        reasons.push(format!("and {} more", slots.len() - 5));
    }
    format!(
        "no slot in the farm can ever satisfy these capabilities ({} slots known; {})",
        slots.len(),
        reasons.join("; ")
    )
}

#[cfg(test)]
#[path = "matching_tests.rs"]
mod tests;
