//! Tests of the sync protocol: push in any split, stat, list, pull and errors.

use super::*;

fn request(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = message(id, body.len() as u32);
    out.extend_from_slice(body);
    out
}

fn push_bytes(path: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = request(b"SEND", format!("{path},33188").as_bytes());
    for chunk in data.chunks(5) {
        bytes.extend(request(b"DATA", chunk));
    }
    bytes.extend(message(b"DONE", 1_700_000_000));
    bytes
}

#[test]
fn push_stores_the_file_in_any_split() {
    let jar = b"PK\x03\x04 not really a jar".to_vec();
    let bytes = push_bytes("/data/local/tmp/scrcpy-server.jar", &jar);
    for split in [1, 3, 7, bytes.len()] {
        let mut files = FileStore::new();
        let mut session = SyncSession::new();
        let mut reply = Vec::new();
        let mut written = Vec::new();
        for chunk in bytes.chunks(split) {
            let out = session.push(chunk, &mut files);
            assert!(!out.close);
            reply.extend(out.reply);
            written.extend(out.written);
        }
        assert_eq!(reply, b"OKAY\0\0\0\0");
        assert_eq!(
            written,
            vec!["/data/local/tmp/scrcpy-server.jar".to_string()]
        );
        assert_eq!(files["/data/local/tmp/scrcpy-server.jar"], jar);
        assert!(session.push(&message(b"QUIT", 0), &mut files).close);
    }
}

#[test]
fn stat_list_and_pull() {
    let mut files = FileStore::new();
    let mut session = SyncSession::new();
    session.push(&push_bytes("/data/local/tmp/a.jar", b"12345"), &mut files);

    let out = session.push(&request(b"STA2", b"/data/local/tmp/a.jar"), &mut files);
    assert_eq!(out.reply.len(), 72);
    assert_eq!(&out.reply[..8], b"STA2\0\0\0\0");
    assert_eq!(word(&out.reply[24..28]), S_IFREG | 0o644);
    assert_eq!(&out.reply[40..48], &5u64.to_le_bytes());
    let missing = session.push(&request(b"LST2", b"/nope"), &mut files);
    assert_eq!(word(&missing.reply[4..8]), ENOENT);
    let dir = session.push(&request(b"STAT", b"/data/local/tmp"), &mut files);
    assert_eq!(dir.reply.len(), 16);
    assert_eq!(word(&dir.reply[4..8]), S_IFDIR | 0o771);

    let listing = session.push(&request(b"LIST", b"/data/local/tmp/"), &mut files);
    assert!(listing.reply.starts_with(b"DENT"));
    assert!(listing.reply.windows(5).any(|w| w == b"a.jar"));
    assert!(listing.reply.ends_with(&[
        b'D', b'O', b'N', b'E', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
    ]));

    let pulled = session.push(&request(b"RECV", b"/data/local/tmp/a.jar"), &mut files);
    assert_eq!(
        pulled.reply,
        [&request(b"DATA", b"12345")[..], b"DONE\0\0\0\0"].concat()
    );
    let absent = session.push(&request(b"RECV", b"/x"), &mut files);
    assert!(absent.reply.starts_with(b"FAIL") && absent.close);
}

#[test]
fn bad_requests_fail_and_close() {
    let mut files = FileStore::new();
    for bytes in [
        request(b"WHAT", b"x"),
        message(b"SEND", u32::MAX),
        [
            request(b"SEND", b"/data/local/tmp/x,0"),
            message(b"DATA", u32::MAX),
        ]
        .concat(),
        [
            request(b"SEND", b"/data/local/tmp/x,0"),
            request(b"STAT", b"/"),
        ]
        .concat(),
        request(b"SEND", b"/data/local/tmp,0"),
    ] {
        let mut session = SyncSession::new();
        let out = session.push(&bytes, &mut files);
        assert!(
            out.close && out.reply.starts_with(b"FAIL"),
            "{bytes:?} -> {out:?}"
        );
        assert_eq!(
            session.push(b"QUIT\0\0\0\0", &mut files),
            SyncOutput::default()
        );
    }
    assert!(files.is_empty());
}
