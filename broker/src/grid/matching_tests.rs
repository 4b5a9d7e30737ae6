//! Tests of the capability matcher: the documented rules, and properties over random slots and requests.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn slot(id: &str, site: &str, caps: Value, device: Option<DeviceFacts>) -> SlotFacts {
    SlotFacts {
        node_id: "n1".into(),
        slot_id: id.into(),
        site: site.into(),
        advertised: caps.as_object().cloned().unwrap_or_default(),
        device,
    }
}

fn pixel(serial: &str, version: &str, tags: &[&str]) -> DeviceFacts {
    DeviceFacts {
        id: format!("HW-{serial}"),
        serial: serial.into(),
        platform: "android".into(),
        model: "Pixel 7".into(),
        android_version: version.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn caps(v: Value) -> Caps {
    v.as_object().cloned().unwrap_or_default()
}

fn farm() -> Vec<SlotFacts> {
    vec![
        slot(
            "appium:e1",
            "lab",
            json!({"appium:automationName":"UiAutomator2"}),
            Some(pixel("e1", "14", &["usb3"])),
        ),
        slot(
            "appium:e2",
            "paris",
            json!({}),
            Some(pixel("e2", "13", &["pool-a"])),
        ),
        slot(
            "browser",
            "lab",
            json!({"browserName":"chrome","platformName":"linux","browserVersion":"120.0.1"}),
            None,
        ),
    ]
}

fn matching(request: Value) -> Vec<String> {
    let slots = farm();
    candidates(&[caps(request)], &slots)
        .into_iter()
        .map(|c| slots[c.slot].slot_id.clone())
        .collect()
}

#[test]
fn the_documented_rules() {
    assert_eq!(
        matching(json!({"platformName":"ANDROID"})),
        ["appium:e1", "appium:e2"]
    );
    assert_eq!(
        matching(json!({"platformName":"android","appium:platformVersion":">=14"})),
        ["appium:e1"]
    );
    assert_eq!(
        matching(json!({"appium:platformVersion":"13-13"})),
        ["appium:e2"]
    );
    assert_eq!(matching(json!({"appium:udid":"e2"})), ["appium:e2"]);
    assert_eq!(matching(json!({"appium:udid":"HW-e1"})), ["appium:e1"]);
    assert_eq!(
        matching(json!({"appium:deviceName":"pixel 7","farm:site":"paris"})),
        ["appium:e2"]
    );
    assert_eq!(matching(json!({"farm:pool":"pool-a"})), ["appium:e2"]);
    assert_eq!(matching(json!({"farm:tags":["usb3"]})), ["appium:e1"]);
    assert_eq!(matching(json!({"farm:tags":"usb3"})), ["appium:e1"]);
    assert_eq!(
        matching(json!({"appium:automationName":"espresso"})),
        ["appium:e2"]
    );
    assert_eq!(
        matching(json!({"browserName":"Chrome","browserVersion":">=120"})),
        ["browser"]
    );
    assert_eq!(matching(json!({"browserName":"chrome"})), ["browser"]);
    assert_eq!(
        matching(json!({"platformName":"linux","browserName":"chrome"})),
        ["browser"]
    );
    assert_eq!(
        matching(json!({"platformName":"iOS"})),
        Vec::<String>::new()
    );
    assert_eq!(
        matching(json!({"platformName":"any","farm:site":"lab"})),
        ["appium:e1", "browser"]
    );
    // Keys the grid does not read never exclude a slot.
    assert_eq!(
        matching(json!({"goog:chromeOptions":{"args":["--headless"]},"platformName":"linux"})),
        ["browser"]
    );
}

#[test]
fn the_first_first_match_that_matches_comes_first() {
    let slots = farm();
    let sets = [
        caps(json!({"appium:udid":"nope"})),
        caps(json!({"appium:udid":"e2"})),
        caps(json!({})),
    ];
    let c = candidates(&sets, &slots);
    assert_eq!(c[0], Candidate { set: 1, slot: 1 });
    assert_eq!(c.len(), 1 + slots.len());
}

#[test]
fn explanations_name_the_slot_and_the_key() {
    let why = explain_no_match(&[caps(json!({"platformName":"iOS"}))], &farm());
    assert!(
        why.contains("n1/appium:e1: platformName wants \"iOS\""),
        "{why}"
    );
    assert!(explain_no_match(&[Caps::new()], &[]).contains("no WebDriver slots"));
}

#[test]
fn the_stereotype_holds_the_device_facts() {
    let s = effective_caps(&farm()[0]);
    assert_eq!(s["platformName"], "android");
    assert_eq!(s["appium:platformVersion"], "14");
    assert_eq!(s["appium:udid"], "e1");
    assert_eq!(s["farm:site"], "lab");
}

fn any_slot() -> impl Strategy<Value = SlotFacts> {
    let device = prop::option::of((
        "[a-c]{1,2}",
        prop::sample::select(vec!["android", ""]),
        prop::sample::select(vec!["Pixel 7", "SM-G991B"]),
        prop::sample::select(vec!["12", "13", "14.1", "x"]),
        prop::collection::vec(prop::sample::select(vec!["usb3", "pool-a", "5g"]), 0..3),
    ));
    let advertised = prop::collection::btree_map(
        prop::sample::select(vec![
            "platformName",
            "browserName",
            "appium:automationName",
            "browserVersion",
            "x:y",
        ]),
        prop::sample::select(vec!["Android", "chrome", "Fake", "120", "linux"]),
        0..4,
    );
    (
        prop::sample::select(vec!["lab", "paris"]),
        advertised,
        device,
    )
        .prop_map(|(site, adv, device)| SlotFacts {
            node_id: "n".into(),
            slot_id: "s".into(),
            site: site.into(),
            advertised: adv
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect(),
            device: device.map(|(serial, platform, model, version, tags)| DeviceFacts {
                id: format!("HW-{serial}"),
                serial,
                platform: platform.into(),
                model: model.into(),
                android_version: version.into(),
                tags: tags.into_iter().map(str::to_string).collect(),
            }),
        })
}

fn any_request() -> impl Strategy<Value = Caps> {
    prop::collection::btree_map(
        prop::sample::select(vec![
            "platformName",
            "browserName",
            "browserVersion",
            "appium:automationName",
            "appium:platformVersion",
            "appium:deviceName",
            "appium:udid",
            "farm:site",
            "farm:pool",
            "farm:tags",
            "other:cap",
        ]),
        prop::sample::select(vec![
            "Android", "linux", "chrome", "Fake", ">=13", "13-14", "12", "a", "HW-b", "lab",
            "usb3", "Pixel 7", "any",
        ]),
        0..5,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    })
}

proptest! {
    /// A slot always satisfies a request made of its own stereotype.
    #[test]
    fn a_slot_matches_its_own_stereotype(slot in any_slot()) {
        let own = effective_caps(&slot);
        prop_assert_eq!(mismatch(&own, &slot), None);
    }

    /// Adding a capability never adds candidates (matching is a conjunction).
    #[test]
    fn more_capabilities_never_match_more_slots(
        slots in prop::collection::vec(any_slot(), 0..6),
        request in any_request(),
        extra in any_request(),
    ) {
        let base = candidates(std::slice::from_ref(&request), &slots);
        let mut bigger = request.clone();
        for (k, v) in extra { bigger.entry(k).or_insert(v); }
        let narrowed = candidates(&[bigger], &slots);
        prop_assert!(narrowed.iter().all(|c| base.contains(c)));
    }

    /// Candidates point at real slots and sets, in order, each once; unread keys change nothing.
    #[test]
    fn candidates_are_well_formed(
        slots in prop::collection::vec(any_slot(), 0..6),
        sets in prop::collection::vec(any_request(), 1..3),
    ) {
        let c = candidates(&sets, &slots);
        prop_assert!(c.iter().all(|c| c.set < sets.len() && c.slot < slots.len()));
        prop_assert!(c.windows(2).all(|w| (w[0].set, w[0].slot) < (w[1].set, w[1].slot)));
        let mut with_unread = sets.clone();
        for s in &mut with_unread { s.insert("vendor:unread".into(), json!({"deep": [1, 2]})); }
        prop_assert_eq!(candidates(&with_unread, &slots), c);
    }
}
