//! Tests of the Annex-B helpers against an x264 stream (360x640, keyframe every 5 frames).

use super::*;

pub(crate) const TESTSRC: &[u8] = include_bytes!("../../tests/data/testsrc-360x640.h264");

#[test]
fn splits_nal_units_with_3_and_4_byte_start_codes() {
    let data = [
        0xAA, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 0, 0,
    ];
    assert_eq!(
        nal_units(&data),
        [&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65][..]]
    );
    assert!(nal_units(&[]).is_empty());
    assert!(nal_units(&[0, 0, 1]).is_empty());
    assert!(nal_units(&[1, 2, 3, 4]).is_empty());
    assert!(starts_with_sps(&data));
    assert!(!starts_with_sps(&[0, 0, 1, 0x65, 1]));
}

#[test]
fn sps_sizes() {
    // x264 baseline 360x640 (cropped from 368x640 macroblocks).
    let units = nal_units(TESTSRC);
    let sps = units
        .iter()
        .find(|n| nal_type(n) == Some(NAL_SPS))
        .expect("the stream has an SPS");
    assert_eq!(sps_size(sps), Some((360, 640)));
    // x264 high profile 720x1280 (chroma format, no scaling lists).
    let high = from_hex("6764001facd940b40a1b0110000003001000000303c0f1831960");
    assert_eq!(sps_size(&high), Some((720, 1280)));
    assert_eq!(sps_size(&[0x67]), None);
    assert_eq!(sps_size(&[0x68, 0xFF, 0xFF]), None);
    assert_eq!(sps_size(&[0x67, 0x42, 0, 0x1e, 0, 0, 0, 0, 0, 0]), None);
}

#[test]
fn sps_parsing_never_panics_on_garbage() {
    let mut seed = 0x1234_5678u32;
    for len in 0..200 {
        let mut nal = vec![0x67];
        for _ in 0..len {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            nal.push((seed >> 16) as u8);
        }
        let _ = sps_size(&nal);
    }
}

fn split_all(chunks: impl Iterator<Item = Vec<u8>>) -> Vec<AccessUnit> {
    let mut splitter = AccessUnitSplitter::new();
    let mut units = Vec::new();
    for chunk in chunks {
        splitter.push(&chunk).expect("small NAL units");
        while let Some(unit) = splitter.poll() {
            units.push(unit);
        }
    }
    splitter.flush();
    units.extend(std::iter::from_fn(|| splitter.poll()));
    units
}

#[test]
fn splits_access_units_whatever_the_chunking() {
    let whole = split_all(std::iter::once(TESTSRC.to_vec()));
    assert_eq!(whole.len(), 12);
    let keys: Vec<bool> = whole.iter().map(|u| u.keyframe).collect();
    assert_eq!(
        keys,
        [
            true, false, false, false, false, true, false, false, false, false, true, false
        ]
    );
    assert!(whole.iter().all(|u| u.keyframe == u.has_sps));
    assert!(starts_with_sps(&whole[0].data));
    for chunk_size in [1, 2, 3, 7, 100, 4096] {
        let pieces = TESTSRC.chunks(chunk_size).map(<[u8]>::to_vec);
        assert_eq!(split_all(pieces), whole, "chunks of {chunk_size}");
    }
    // Every NAL unit of the input is in exactly one access unit, in order.
    let rejoined: Vec<Vec<u8>> = whole
        .iter()
        .flat_map(|u| nal_units(&u.data))
        .map(<[u8]>::to_vec)
        .collect();
    let original: Vec<Vec<u8>> = nal_units(TESTSRC).into_iter().map(<[u8]>::to_vec).collect();
    assert_eq!(rejoined, original);
}

#[test]
fn holds_the_last_unit_until_flush() {
    let mut splitter = AccessUnitSplitter::new();
    splitter.push(&[0, 0, 0, 1, 0x67, 0x42]).expect("small");
    splitter.push(&[0, 0, 0, 1, 0x68, 0xCE]).expect("small");
    splitter
        .push(&[0, 0, 0, 1, 0x65, 0x88, 0x80])
        .expect("small");
    assert_eq!(splitter.poll(), None);
    splitter.flush();
    let unit = splitter.poll().expect("a picture");
    assert!(unit.keyframe && unit.has_sps);
    assert_eq!(
        unit.data,
        [
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65, 0x88, 0x80
        ]
    );
    splitter.flush();
    assert_eq!(splitter.poll(), None);
    // A non-IDR picture after a flush.
    splitter
        .push(&[0, 0, 1, 0x41, 0x9A, 0, 0, 1, 0x41, 0x9B])
        .expect("small");
    let first = splitter
        .poll()
        .expect("complete: the next picture's first bytes arrived");
    assert!(!first.keyframe && !first.has_sps);
    assert_eq!(first.data, [0, 0, 0, 1, 0x41, 0x9A]);
}

#[test]
fn refuses_endless_nal_units_and_skips_garbage() {
    let mut splitter = AccessUnitSplitter::new();
    // Garbage without a start code never grows the buffer.
    for _ in 0..100 {
        splitter.push(&[0xFF; 100_000]).expect("dropped");
    }
    splitter.flush();
    assert_eq!(splitter.poll(), None);
    splitter.push(&[0, 0, 1, 0x65]).expect("small");
    let mut refused = false;
    for _ in 0..200 {
        if splitter.push(&[0xFF; 100_000]).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused);
}

pub(crate) fn from_hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[test]
fn a_restart_drops_only_the_partial_unit() {
    let mut splitter = AccessUnitSplitter::new();
    splitter
        .push(&[0, 0, 1, 0x65, 0x88, 0, 0, 1, 0x41, 0x9A, 7, 7])
        .expect("small");
    splitter.discard_partial();
    assert_eq!(
        splitter.poll().map(|u| u.data),
        Some(vec![0, 0, 0, 1, 0x65, 0x88])
    );
    splitter.flush();
    assert_eq!(splitter.poll(), None);
}
