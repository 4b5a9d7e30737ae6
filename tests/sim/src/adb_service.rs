//! adb services: parsing the OPEN service string and producing a stream's reply (sans-IO).
//!
//! New services (`sync:` for push/pull, `localabstract:` for scrcpy) plug in here: add the
//! variant's reply in [`start_service`]; the session handles streams and flow control.

use crate::device_profile::DeviceProfile;
use crate::shell::{ShellOutcome, run_shell};

/// shell v2 packet ids.
pub const SHELL_STDIN: u8 = 0;
pub const SHELL_STDOUT: u8 = 1;
pub const SHELL_STDERR: u8 = 2;
pub const SHELL_EXIT: u8 = 3;
pub const SHELL_CLOSE_STDIN: u8 = 4;

/// The largest data part of one shell v2 packet we send.
const SHELL_PACKET_DATA: usize = 64 * 1024;

/// A service the host asked for in OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// `shell:CMD` (v1, raw output, no exit code) or `shell,v2,...:CMD`.
    Shell {
        v2: bool,
        pty: bool,
        command: String,
    },
    /// `exec:CMD`: raw stdout only.
    Exec {
        command: String,
    },
    /// `sync:`: file transfer (not implemented yet).
    Sync,
    /// `localabstract:NAME`: a local socket on the device (not implemented yet).
    LocalAbstract {
        name: String,
    },
    Unknown(String),
}

/// Parses the OPEN payload (with or without its trailing NUL).
pub fn parse_service(payload: &[u8]) -> Service {
    let text = String::from_utf8_lossy(payload);
    let text = text.trim_end_matches('\0');
    if let Some(rest) = text.strip_prefix("shell")
        && (rest.starts_with(':') || rest.starts_with(','))
    {
        let (options, command) = rest.split_once(':').unwrap_or((rest, ""));
        let options: Vec<&str> = options.split(',').collect();
        return Service::Shell {
            v2: options.contains(&"v2"),
            // adb asks for a pty when no command is given unless told `raw`.
            pty: options.contains(&"pty") || (command.is_empty() && !options.contains(&"raw")),
            command: command.to_string(),
        };
    }
    if let Some(command) = text.strip_prefix("exec:") {
        return Service::Exec {
            command: command.to_string(),
        };
    }
    if text == "sync:" {
        return Service::Sync;
    }
    if let Some(name) = text.strip_prefix("localabstract:") {
        return Service::LocalAbstract {
            name: name.to_string(),
        };
    }
    Service::Unknown(text.to_string())
}

/// How the device answers an OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceStart {
    /// Refuse the stream (the device answers CLSE).
    Refuse,
    /// Accept, send these bytes, then close the stream.
    Reply {
        bytes: Vec<u8>,
        /// The shell command that ran, for the record.
        command: String,
        outcome: ShellOutcome,
    },
}

/// Starts `service` on `device`. Every current service runs to completion at once.
pub fn start_service(service: &Service, device: &DeviceProfile) -> ServiceStart {
    match service {
        Service::Shell { v2, pty, command } => {
            let outcome = if command.trim().is_empty() {
                // An interactive shell: nothing to run, exit 0 at once.
                ShellOutcome::default()
            } else {
                run_shell(command, device)
            };
            let bytes = if *v2 {
                shell_v2_bytes(&outcome)
            } else {
                let mut bytes = outcome.stdout.clone();
                bytes.extend_from_slice(&outcome.stderr);
                if *pty {
                    bytes = crlf(&bytes);
                }
                bytes
            };
            ServiceStart::Reply {
                bytes,
                command: command.clone(),
                outcome,
            }
        }
        Service::Exec { command } => {
            let outcome = run_shell(command, device);
            ServiceStart::Reply {
                bytes: outcome.stdout.clone(),
                command: command.clone(),
                outcome,
            }
        }
        Service::Sync | Service::LocalAbstract { .. } | Service::Unknown(_) => ServiceStart::Refuse,
    }
}

/// Encodes an outcome as shell v2 packets: stdout, stderr, then the exit code.
pub fn shell_v2_bytes(outcome: &ShellOutcome) -> Vec<u8> {
    let mut out = Vec::with_capacity(outcome.stdout.len() + outcome.stderr.len() + 32);
    for (id, data) in [
        (SHELL_STDOUT, &outcome.stdout),
        (SHELL_STDERR, &outcome.stderr),
    ] {
        for chunk in data.chunks(SHELL_PACKET_DATA) {
            push_shell_packet(&mut out, id, chunk);
        }
    }
    push_shell_packet(&mut out, SHELL_EXIT, &[outcome.exit_code]);
    out
}

fn push_shell_packet(out: &mut Vec<u8>, id: u8, data: &[u8]) {
    out.push(id);
    // Chunks are at most SHELL_PACKET_DATA long.
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// A pty turns `\n` into `\r\n`.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for &byte in bytes {
        if byte == b'\n' {
            out.push(b'\r');
        }
        out.push(byte);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_strings() {
        assert_eq!(
            parse_service(b"shell,v2,TERM=xterm,raw:getprop ro.product.model\0"),
            Service::Shell {
                v2: true,
                pty: false,
                command: "getprop ro.product.model".into()
            }
        );
        assert_eq!(
            parse_service(b"shell,v2,TERM=xterm,pty:\0"),
            Service::Shell {
                v2: true,
                pty: true,
                command: String::new()
            }
        );
        assert_eq!(
            parse_service(b"shell:echo a:b"),
            Service::Shell {
                v2: false,
                pty: false,
                command: "echo a:b".into()
            }
        );
        assert_eq!(
            parse_service(b"exec:screencap '-p'\0"),
            Service::Exec {
                command: "screencap '-p'".into()
            }
        );
        assert_eq!(parse_service(b"sync:\0"), Service::Sync);
        assert_eq!(
            parse_service(b"localabstract:scrcpy\0"),
            Service::LocalAbstract {
                name: "scrcpy".into()
            }
        );
        assert_eq!(
            parse_service(b"shellfish:x"),
            Service::Unknown("shellfish:x".into())
        );
        assert_eq!(
            parse_service(&[0xFF, 0xFE]),
            Service::Unknown("\u{FFFD}\u{FFFD}".into())
        );
    }

    #[test]
    fn shell_v2_packets_carry_exit_code() {
        let outcome = ShellOutcome {
            stdout: b"out".to_vec(),
            stderr: b"e".to_vec(),
            exit_code: 127,
            input: Vec::new(),
        };
        assert_eq!(
            shell_v2_bytes(&outcome),
            b"\x01\x03\0\0\0out\x02\x01\0\0\0e\x03\x01\0\0\0\x7f".to_vec()
        );
    }
}
