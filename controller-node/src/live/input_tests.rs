//! Tests of the `input` channel validation: good input, and garbage, huge, NaN, negative,
//! unknown pointer and out-of-range input.

use super::*;

const SIZE: VideoSize = VideoSize {
    width: 720,
    height: 1280,
};

fn parse(json: &str) -> Result<InputAction, InputError> {
    parse_input(json.as_bytes(), true, SIZE, true)
}

fn control(json: &str) -> ControlMessage {
    match parse(json) {
        Ok(InputAction::Control(message)) => message,
        other => panic!("{json}: {other:?}"),
    }
}

#[test]
fn touches_map_to_the_current_video_size() {
    assert_eq!(
        control(r#"{"type":"touch","action":"down","pointer":0,"x":100,"y":200}"#),
        ControlMessage::Touch {
            action: TouchAction::Down,
            pointer_id: 0,
            x: 100,
            y: 200,
            width: 720,
            height: 1280,
            pressure: FULL_PRESSURE,
        }
    );
    let up = control(r#"{"type":"touch","action":"up","pointer":9,"x":719,"y":1279}"#);
    assert!(matches!(
        up,
        ControlMessage::Touch {
            action: TouchAction::Up,
            pointer_id: 9,
            pressure: 0,
            ..
        }
    ));
    let moved = control(r#"{"type":"touch","action":"move","pointer":3,"x":0,"y":0}"#);
    assert!(matches!(
        moved,
        ControlMessage::Touch {
            action: TouchAction::Move,
            ..
        }
    ));
}

#[test]
fn every_other_type_maps() {
    assert_eq!(
        control(r#"{"type":"key","action":"down","keycode":3}"#),
        ControlMessage::Key {
            action: KeyAction::Down,
            keycode: 3,
            repeat: 0,
            metastate: 0
        }
    );
    assert_eq!(
        control(r#"{"type":"key","action":"up","keycode":400,"meta":193}"#),
        ControlMessage::Key {
            action: KeyAction::Up,
            keycode: 400,
            repeat: 0,
            metastate: 193
        }
    );
    assert_eq!(
        control(r#"{"type":"text","text":"héllo"}"#),
        ControlMessage::Text("héllo".into())
    );
    assert_eq!(
        control(r#"{"type":"scroll","x":10,"y":20,"dx":0,"dy":-1}"#),
        ControlMessage::Scroll {
            x: 10,
            y: 20,
            width: 720,
            height: 1280,
            hscroll: 0,
            vscroll: -2048
        }
    );
    let full = control(r#"{"type":"scroll","x":1,"y":1,"dx":16,"dy":-16}"#);
    assert!(matches!(
        full,
        ControlMessage::Scroll {
            hscroll: 32767,
            vscroll: -32768,
            ..
        }
    ));
    assert_eq!(
        control(r#"{"type":"rotate"}"#),
        ControlMessage::RotateDevice
    );
    assert_eq!(
        control(r#"{"type":"clipboard","text":"x","paste":true}"#),
        ControlMessage::SetClipboard {
            sequence: 0,
            paste: true,
            text: "x".into()
        }
    );
    assert_eq!(
        parse(r#"{"type":"ping","t":1234.5}"#),
        Ok(InputAction::Pong(Number::from_f64(1234.5).expect("finite")))
    );
}

#[test]
fn hostile_inputs_are_refused_with_a_reason() {
    let long_text = format!(r#"{{"type":"text","text":"{}"}}"#, "é".repeat(151));
    let huge = format!(r#"{{"type":"rotate","pad":"{}"}}"#, "a".repeat(5000));
    let cases: Vec<(&str, &str)> = vec![
        ("", "JSON"),
        ("garbage", "JSON"),
        ("\u{0}\u{1}", "JSON"),
        ("[1,2]", "object"),
        ("null", "object"),
        ("{}", "type"),
        (r#"{"type":5}"#, "type"),
        (r#"{"type":"launch_missiles"}"#, "unknown message type"),
        (
            r#"{"type":"touch","action":"down","pointer":10,"x":1,"y":1}"#,
            "pointer",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":-1,"x":1,"y":1}"#,
            "pointer",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":1.5,"x":1,"y":1}"#,
            "pointer",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":"0","x":1,"y":1}"#,
            "pointer",
        ),
        (r#"{"type":"touch","action":"down","x":1,"y":1}"#, "pointer"),
        (
            r#"{"type":"touch","action":"tap","pointer":0,"x":1,"y":1}"#,
            "action",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":0,"x":-1,"y":1}"#,
            "outside",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":0,"x":720,"y":1}"#,
            "outside",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":0,"x":1,"y":1280}"#,
            "outside",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":0,"x":1e308,"y":1}"#,
            "integer",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":0,"x":NaN,"y":1}"#,
            "JSON",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":0,"x":99999999999999999999,"y":1}"#,
            "integer",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":0,"x":1.5,"y":1}"#,
            "integer",
        ),
        (
            r#"{"type":"touch","action":"down","pointer":0,"y":1}"#,
            "\"x\"",
        ),
        (r#"{"type":"key","action":"down","keycode":401}"#, "keycode"),
        (r#"{"type":"key","action":"down","keycode":-3}"#, "keycode"),
        (r#"{"type":"key","action":"press","keycode":3}"#, "action"),
        (
            r#"{"type":"key","action":"down","keycode":3,"meta":-1}"#,
            "meta",
        ),
        (r#"{"type":"text"}"#, "text"),
        (&long_text, "302 bytes"),
        (r#"{"type":"scroll","x":1,"y":1,"dx":17,"dy":0}"#, "scroll"),
        (r#"{"type":"scroll","x":1,"y":1,"dx":0}"#, "dy"),
        (r#"{"type":"clipboard","text":"x","paste":"yes"}"#, "paste"),
        (r#"{"type":"ping"}"#, "\"t\""),
        (r#"{"type":"ping","t":"now"}"#, "\"t\""),
        (&huge, "too long"),
    ];
    for (input, needle) in cases {
        let error = parse(input).expect_err(input).to_string();
        assert!(error.contains(needle), "{input}: {error}");
        assert!(error.len() < 200, "short errors: {error}");
    }
}

#[test]
fn observers_binary_and_sizeless_input_are_refused() {
    let touch = br#"{"type":"touch","action":"down","pointer":0,"x":1,"y":1}"#;
    assert_eq!(
        parse_input(touch, true, SIZE, false),
        Err(InputError::NotController)
    );
    assert_eq!(
        parse_input(br#"{"type":"ping","t":1}"#, true, SIZE, false),
        Err(InputError::NotController)
    );
    assert_eq!(
        parse_input(touch, false, SIZE, true),
        Err(InputError::Binary)
    );
    assert_eq!(
        parse_input(touch, true, VideoSize::default(), true),
        Err(InputError::NoVideoSize)
    );
    let giant = VideoSize {
        width: 70_000,
        height: 10,
    };
    assert_eq!(
        parse_input(touch, true, giant, true),
        Err(InputError::NoVideoSize)
    );
}

#[test]
fn invalid_utf8_is_refused_without_panicking() {
    let bytes = [b'{', 0xFF, 0xFE, b'}'];
    assert!(matches!(
        parse_input(&bytes, true, SIZE, true),
        Err(InputError::BadJson(_))
    ));
}

#[test]
fn replies_encode_as_the_contract_says() {
    assert_eq!(
        NodeToBrowser::Size {
            width: 720,
            height: 1280
        }
        .to_json(),
        r#"{"type":"size","width":720,"height":1280}"#
    );
    assert_eq!(
        NodeToBrowser::Error {
            message: "no".into()
        }
        .to_json(),
        r#"{"type":"error","message":"no"}"#
    );
    assert_eq!(
        NodeToBrowser::Pong { t: Number::from(7) }.to_json(),
        r#"{"type":"pong","t":7}"#
    );
}
