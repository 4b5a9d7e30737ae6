//! The device side of adb's `sync:` file protocol (sans-IO): push (SEND/DATA/DONE), STAT,
//! STA2/LST2, LIST, RECV and QUIT over an in-memory file store.

use std::collections::BTreeMap;

/// Files pushed to a device: absolute path to contents.
pub type FileStore = BTreeMap<String, Vec<u8>>;

/// The largest DATA chunk accepted (adb sends at most 64 KiB).
const MAX_DATA: usize = 1024 * 1024;
/// The longest path accepted.
const MAX_PATH: usize = 1024;
/// The most bytes the store holds for one file.
const MAX_FILE: usize = 64 * 1024 * 1024;
/// Directories that always exist.
const DIRECTORIES: &[&str] = &[
    "/",
    "/data",
    "/data/local",
    "/data/local/tmp",
    "/sdcard",
    "/sdcard/",
];
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const ENOENT: u32 = 2;

/// What the IO shell must do after feeding bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncOutput {
    /// Bytes to send back to the host.
    pub reply: Vec<u8>,
    /// The session is over (QUIT or a protocol error): close the stream.
    pub close: bool,
    /// Files completely received, by path.
    pub written: Vec<String>,
}

#[derive(Debug)]
enum State {
    Command,
    Receiving { path: String, data: Vec<u8> },
    Closed,
}

/// One `sync:` stream.
#[derive(Debug)]
pub struct SyncSession {
    buffer: Vec<u8>,
    state: State,
}

impl Default for SyncSession {
    fn default() -> Self {
        Self::new()
    }
}

fn word(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn message(id: &[u8; 4], value: u32) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend_from_slice(&value.to_le_bytes());
    out
}

fn fail(out: &mut SyncOutput, text: &str) {
    out.reply.extend(message(b"FAIL", text.len() as u32));
    out.reply.extend_from_slice(text.as_bytes());
    out.close = true;
}

/// (is a directory, size) of `path`, or `None` when it does not exist.
fn lookup(files: &FileStore, path: &str) -> Option<(bool, u64)> {
    if let Some(data) = files.get(path) {
        return Some((false, data.len() as u64));
    }
    let trimmed = path.trim_end_matches('/');
    let is_dir = DIRECTORIES.contains(&path)
        || DIRECTORIES.contains(&trimmed)
        || files
            .keys()
            .any(|file| file.starts_with(&format!("{trimmed}/")));
    is_dir.then_some((true, 0))
}

impl SyncSession {
    pub fn new() -> Self {
        Self {
            buffer: Vec::new(),
            state: State::Command,
        }
    }

    /// Feeds bytes from the host; answers and stores files in `files`.
    pub fn push(&mut self, bytes: &[u8], files: &mut FileStore) -> SyncOutput {
        let mut out = SyncOutput::default();
        if matches!(self.state, State::Closed) {
            return out;
        }
        self.buffer.extend_from_slice(bytes);
        while self.buffer.len() >= 8 && !out.close {
            let id: [u8; 4] = [
                self.buffer[0],
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
            ];
            let length = word(&self.buffer[4..8]) as usize;
            let receiving = matches!(self.state, State::Receiving { .. });
            // DONE carries a timestamp, not a length; QUIT carries nothing.
            let body_length = match (&id, receiving) {
                (b"DONE", true) | (b"QUIT", _) => 0,
                (b"DATA", true) if length > MAX_DATA => {
                    fail(&mut out, "data chunk too large");
                    break;
                }
                (b"DATA", true) => length,
                (_, false) if length > MAX_PATH => {
                    fail(&mut out, "path too long");
                    break;
                }
                _ => length,
            };
            if self.buffer.len() < 8 + body_length {
                break;
            }
            let body: Vec<u8> = self.buffer[8..8 + body_length].to_vec();
            self.buffer.drain(..8 + body_length);
            self.handle(&id, body, files, &mut out);
        }
        if out.close {
            self.state = State::Closed;
            self.buffer.clear();
        }
        out
    }

    fn handle(&mut self, id: &[u8; 4], body: Vec<u8>, files: &mut FileStore, out: &mut SyncOutput) {
        let path = String::from_utf8_lossy(&body).into_owned();
        match (&mut self.state, id) {
            (State::Receiving { data, .. }, b"DATA") => {
                if data.len() + body.len() > MAX_FILE {
                    fail(out, "No space left on device");
                } else {
                    data.extend_from_slice(&body);
                }
            }
            (State::Receiving { path, data }, b"DONE") => {
                let (path, data) = (std::mem::take(path), std::mem::take(data));
                out.written.push(path.clone());
                files.insert(path, data);
                out.reply.extend(message(b"OKAY", 0));
                self.state = State::Command;
            }
            (State::Receiving { .. }, _) => fail(out, "unexpected message during SEND"),
            (_, b"SEND") => {
                // "PATH,MODE": the mode is ignored.
                let target = path.rsplit_once(',').map_or(path.as_str(), |(p, _)| p);
                if lookup(files, target).is_some_and(|(dir, _)| dir) {
                    fail(out, &format!("{target}: Is a directory"));
                } else {
                    self.state = State::Receiving {
                        path: target.to_string(),
                        data: Vec::new(),
                    };
                }
            }
            (_, b"STAT") => {
                let (mode, size) = match lookup(files, &path) {
                    Some((true, _)) => (S_IFDIR | 0o771, 0),
                    Some((false, size)) => (S_IFREG | 0o644, size as u32),
                    None => (0, 0),
                };
                out.reply.extend_from_slice(b"STAT");
                for value in [mode, size, 0] {
                    out.reply.extend_from_slice(&value.to_le_bytes());
                }
            }
            (_, b"STA2" | b"LST2") => {
                out.reply.extend_from_slice(id);
                let (error, mode, size) = match lookup(files, &path) {
                    Some((true, _)) => (0, S_IFDIR | 0o771, 0),
                    Some((false, size)) => (0, S_IFREG | 0o644, size),
                    None => (ENOENT, 0, 0),
                };
                out.reply.extend_from_slice(&error.to_le_bytes());
                out.reply.extend_from_slice(&[0; 16]); // dev, ino
                out.reply.extend_from_slice(&mode.to_le_bytes());
                out.reply.extend_from_slice(&[0; 12]); // nlink, uid, gid
                out.reply.extend_from_slice(&size.to_le_bytes());
                out.reply.extend_from_slice(&[0; 24]); // atime, mtime, ctime
            }
            (_, b"LIST") => {
                let prefix = format!("{}/", path.trim_end_matches('/'));
                for (file, data) in files.iter() {
                    if let Some(name) = file.strip_prefix(&prefix)
                        && !name.contains('/')
                    {
                        out.reply.extend_from_slice(b"DENT");
                        for value in [S_IFREG | 0o644, data.len() as u32, 0, name.len() as u32] {
                            out.reply.extend_from_slice(&value.to_le_bytes());
                        }
                        out.reply.extend_from_slice(name.as_bytes());
                    }
                }
                out.reply.extend_from_slice(b"DONE");
                out.reply.extend_from_slice(&[0; 16]);
            }
            (_, b"RECV") => match files.get(&path) {
                Some(data) => {
                    for chunk in data.chunks(64 * 1024) {
                        out.reply.extend(message(b"DATA", chunk.len() as u32));
                        out.reply.extend_from_slice(chunk);
                    }
                    out.reply.extend(message(b"DONE", 0));
                }
                None => fail(
                    out,
                    &format!("open failed: No such file or directory: {path}"),
                ),
            },
            (_, b"QUIT") => out.close = true,
            (_, other) => {
                let name = String::from_utf8_lossy(other).into_owned();
                fail(out, &format!("unknown sync command {name:?}"));
            }
        }
    }
}

#[cfg(test)]
#[path = "sync_protocol_tests.rs"]
mod tests;
