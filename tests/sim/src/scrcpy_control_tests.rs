//! Tests of the scrcpy control message decoder: every type, any split, bad input.

use super::*;

fn be(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// (bytes, expected message) for every supported type.
fn cases() -> Vec<(Vec<u8>, ControlMessage)> {
    vec![
        (
            be(&[
                &[0, 1],
                &66u32.to_be_bytes(),
                &2u32.to_be_bytes(),
                &1u32.to_be_bytes(),
            ]),
            ControlMessage::InjectKeycode {
                action: 1,
                keycode: 66,
                repeat: 2,
                metastate: 1,
            },
        ),
        (
            be(&[&[1], &5u32.to_be_bytes(), b"h\xc3\xa9y!"]),
            ControlMessage::InjectText("h\u{e9}y!".into()),
        ),
        (
            be(&[
                &[2, 0],
                &7u64.to_be_bytes(),
                &(-3i32).to_be_bytes(),
                &400i32.to_be_bytes(),
                &576u16.to_be_bytes(),
                &1280u16.to_be_bytes(),
                &0xFFFFu16.to_be_bytes(),
                &1u32.to_be_bytes(),
                &1u32.to_be_bytes(),
            ]),
            ControlMessage::InjectTouch {
                action: 0,
                pointer_id: 7,
                x: -3,
                y: 400,
                width: 576,
                height: 1280,
                pressure: 0xFFFF,
                action_button: 1,
                buttons: 1,
            },
        ),
        (
            be(&[
                &[3],
                &10i32.to_be_bytes(),
                &20i32.to_be_bytes(),
                &576u16.to_be_bytes(),
                &1280u16.to_be_bytes(),
                &0i16.to_be_bytes(),
                &(-2048i16).to_be_bytes(),
                &0u32.to_be_bytes(),
            ]),
            ControlMessage::InjectScroll {
                x: 10,
                y: 20,
                width: 576,
                height: 1280,
                hscroll: 0,
                vscroll: -2048,
                buttons: 0,
            },
        ),
        (vec![4, 1], ControlMessage::BackOrScreenOn { action: 1 }),
        (vec![5], ControlMessage::ExpandNotificationPanel),
        (vec![6], ControlMessage::ExpandSettingsPanel),
        (vec![7], ControlMessage::CollapsePanels),
        (vec![8, 1], ControlMessage::GetClipboard { copy_key: 1 }),
        (
            be(&[
                &[9],
                &42u64.to_be_bytes(),
                &[1],
                &3u32.to_be_bytes(),
                b"abc",
            ]),
            ControlMessage::SetClipboard {
                sequence: 42,
                paste: true,
                text: "abc".into(),
            },
        ),
        (vec![10, 0], ControlMessage::SetDisplayPower { on: false }),
        (vec![11], ControlMessage::RotateDevice),
        (
            be(&[
                &[12],
                &[0, 1, 0, 2, 0, 3],
                &[2],
                b"kb",
                &2u16.to_be_bytes(),
                &[5, 6],
            ]),
            ControlMessage::UhidCreate {
                id: 1,
                name: "kb".into(),
            },
        ),
        (
            be(&[&[13], &1u16.to_be_bytes(), &3u16.to_be_bytes(), &[7, 8, 9]]),
            ControlMessage::UhidInput {
                id: 1,
                data: vec![7, 8, 9],
            },
        ),
        (vec![14, 0, 1], ControlMessage::UhidDestroy { id: 1 }),
        (vec![15], ControlMessage::OpenHardKeyboardSettings),
        (
            be(&[&[16, 3], b"app"]),
            ControlMessage::StartApp { name: "app".into() },
        ),
        (vec![17], ControlMessage::ResetVideo),
    ]
}

#[test]
fn decodes_every_type_whole_and_byte_by_byte() {
    for (bytes, expected) in cases() {
        let mut decoder = ControlDecoder::new();
        decoder.push(&bytes);
        assert_eq!(
            decoder.next_message(),
            Ok(Some(expected.clone())),
            "{bytes:?}"
        );
        assert_eq!(decoder.next_message(), Ok(None));

        // Truncated at every point: nothing until the last byte arrives.
        let mut decoder = ControlDecoder::new();
        for (index, byte) in bytes.iter().enumerate() {
            assert_eq!(decoder.next_message(), Ok(None), "{expected:?} at {index}");
            decoder.push(&[*byte]);
        }
        assert_eq!(decoder.next_message(), Ok(Some(expected)));
    }
}

#[test]
fn back_to_back_messages() {
    let mut all = Vec::new();
    let mut expected = Vec::new();
    for (bytes, message) in cases() {
        all.extend(bytes);
        expected.push(message);
    }
    let mut decoder = ControlDecoder::new();
    decoder.push(&all);
    let mut got = Vec::new();
    while let Ok(Some(message)) = decoder.next_message() {
        got.push(message);
    }
    assert_eq!(got, expected);
}

#[test]
fn unknown_type_and_oversized_text_are_errors() {
    for kind in [18u8, 99, 255] {
        let mut decoder = ControlDecoder::new();
        decoder.push(&[kind, 0, 0]);
        assert_eq!(decoder.next_message(), Err(ControlError::UnknownType(kind)));
    }
    // The length alone is enough to refuse: the text never has to arrive.
    let mut decoder = ControlDecoder::new();
    decoder.push(&be(&[&[1], &301u32.to_be_bytes()]));
    assert_eq!(
        decoder.next_message(),
        Err(ControlError::TooLong {
            kind: 1,
            length: 301,
            limit: TEXT_MAX
        })
    );
    let mut decoder = ControlDecoder::new();
    decoder.push(&be(&[
        &[9],
        &1u64.to_be_bytes(),
        &[0],
        &u32::MAX.to_be_bytes(),
    ]));
    assert!(matches!(
        decoder.next_message(),
        Err(ControlError::TooLong { kind: 9, .. })
    ));
    // Exactly 300 bytes is fine.
    let mut decoder = ControlDecoder::new();
    decoder.push(&be(&[&[1], &300u32.to_be_bytes(), &[b'x'; 300]]));
    assert_eq!(
        decoder.next_message(),
        Ok(Some(ControlMessage::InjectText("x".repeat(300))))
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut state = 0x1234_5678u32;
    for _ in 0..2000 {
        let mut decoder = ControlDecoder::new();
        let mut bytes = Vec::new();
        for _ in 0..(state % 64) {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            bytes.push((state >> 16) as u8 % 20);
        }
        decoder.push(&bytes);
        for _ in 0..64 {
            if !matches!(decoder.next_message(), Ok(Some(_))) {
                break;
            }
        }
    }
}

#[test]
fn device_messages() {
    assert_eq!(clipboard_message("hi"), vec![0, 0, 0, 0, 2, b'h', b'i']);
    assert_eq!(
        ack_clipboard_message(0x0102),
        vec![1, 0, 0, 0, 0, 0, 0, 1, 2]
    );
}
