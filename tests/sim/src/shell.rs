//! The simulated device shell: a pure function from a command line and a device to output and exit code.

use crate::device_profile::DeviceProfile;
use crate::input_command::{self, InputEvent};
use crate::shell_words::{Token, tokenize};

/// What running one command line produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellOutcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: u8,
    /// Input events the command injected, in order.
    pub input: Vec<InputEvent>,
}

impl ShellOutcome {
    fn out(&mut self, text: &str) {
        self.stdout.extend_from_slice(text.as_bytes());
    }

    fn err(&mut self, text: &str) {
        self.stderr.extend_from_slice(text.as_bytes());
    }
}

/// Runs `line` (the command as the service carried it, still shell-quoted) on `device`.
pub fn run_shell(line: &str, device: &DeviceProfile) -> ShellOutcome {
    let mut outcome = ShellOutcome::default();
    let tokens = match tokenize(line) {
        Ok(tokens) => tokens,
        Err(error) => {
            outcome.err(&format!("/system/bin/sh: {error}\n"));
            outcome.exit_code = 1;
            return outcome;
        }
    };
    let mut words: Vec<String> = Vec::new();
    // Whether the next command should run, given the separator before it.
    let mut run_next = true;
    for token in tokens.into_iter().chain(std::iter::once(Token::Then)) {
        let Token::Word(word) = token else {
            if run_next && !words.is_empty() {
                if let Some(code) = run_command(&words, device, &mut outcome) {
                    outcome.exit_code = code;
                } else {
                    return outcome; // `exit`
                }
            }
            words.clear();
            run_next = match token {
                Token::And => outcome.exit_code == 0,
                Token::Or => outcome.exit_code != 0,
                _ => true,
            };
            continue;
        };
        words.push(word);
    }
    outcome
}

/// Runs one simple command; `None` means the shell exits (the exit code is already set).
fn run_command(words: &[String], device: &DeviceProfile, outcome: &mut ShellOutcome) -> Option<u8> {
    let (name, args) = words.split_first()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match (name.as_str(), args.as_slice()) {
        ("true", _) => 0,
        ("false", _) => 1,
        ("exit", []) => return None,
        ("exit", [code]) => {
            outcome.exit_code = code
                .parse::<i64>()
                .map(|c| c.rem_euclid(256) as u8)
                .unwrap_or(2);
            return None;
        }
        ("echo", args) => {
            let (newline, args) = match args.split_first() {
                Some((&"-n", rest)) => (false, rest),
                _ => (true, args),
            };
            outcome.out(&args.join(" "));
            if newline {
                outcome.out("\n");
            }
            0
        }
        ("getprop", []) => {
            for (key, value) in device.properties() {
                outcome.out(&format!("[{key}]: [{value}]\n"));
            }
            0
        }
        ("getprop", [key, ..]) => {
            let value = device.property(key);
            let value = match (value.is_empty(), args.get(1)) {
                (true, Some(default)) => default.to_string(),
                _ => value,
            };
            outcome.out(&format!("{value}\n"));
            0
        }
        ("wm", ["size"]) => {
            outcome.out(&format!(
                "Physical size: {}x{}\n",
                device.screen_width, device.screen_height
            ));
            0
        }
        ("wm", ["density"]) => {
            outcome.out(&format!("Physical density: {}\n", device.density));
            0
        }
        ("wm", _) => {
            outcome.err("usage: wm [size|density]\n");
            1
        }
        ("dumpsys", ["battery"]) => {
            outcome.out(&battery_report(device));
            0
        }
        // Other services exist but say nothing interesting here.
        ("dumpsys", _) => 0,
        ("input", _) => match input_command::parse_input(&words[1..]) {
            Ok(events) => {
                outcome.input.extend(events);
                0
            }
            Err(input_command::InputUsageError) => {
                outcome.err(input_command::USAGE);
                1
            }
        },
        ("screencap", args) => {
            let mut png = false;
            for arg in args {
                match *arg {
                    "-p" => png = true,
                    "-h" | "--help" | "-d" => {}
                    _ if arg.starts_with('-') => {
                        outcome.err("usage: screencap [-hp] [-d display-id] [FILENAME]\n");
                        return Some(1);
                    }
                    _ => {
                        // Writing to a file on the device: pretend it worked.
                        return Some(0);
                    }
                }
            }
            if png {
                outcome.stdout.extend_from_slice(device.screenshot_png());
            } else {
                outcome.stdout.extend(crate::screen::render_raw(device));
            }
            0
        }
        _ => {
            outcome.err(&format!(
                "/system/bin/sh: {name}: inaccessible or not found\n"
            ));
            127
        }
    };
    Some(code)
}

/// `dumpsys battery`, in Android's format.
fn battery_report(device: &DeviceProfile) -> String {
    let ac = device.ac_powered;
    let status = match (ac, device.battery_level) {
        (_, 100) => 5, // full
        (true, _) => 2,
        (false, _) => 3,
    };
    format!(
        "Current Battery Service state:\n  AC powered: {ac}\n  USB powered: false\n  Wireless powered: false\n  Max charging current: {}\n  Max charging voltage: {}\n  Charge counter: {}\n  status: {status}\n  health: 2\n  present: true\n  level: {}\n  scale: 100\n  voltage: 4210\n  temperature: 290\n  technology: Li-ion\n",
        if ac { 1_500_000 } else { 0 },
        if ac { 5_000_000 } else { 0 },
        u32::from(device.battery_level) * 40_000,
        device.battery_level,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> (String, String, u8) {
        let device = DeviceProfile::generate("SIM-9", 0);
        let outcome = run_shell(line, &device);
        (
            String::from_utf8_lossy(&outcome.stdout).into_owned(),
            String::from_utf8_lossy(&outcome.stderr).into_owned(),
            outcome.exit_code,
        )
    }

    #[test]
    fn data_driven_commands() {
        let cases: &[(&str, &str, &str, u8)] = &[
            ("getprop ro.product.model", "Pixel 7\n", "", 0),
            ("getprop 'ro.serialno'", "SIM-9-01\n", "", 0),
            ("getprop ro.build.version.sdk", "34\n", "", 0),
            ("getprop no.such.prop", "\n", "", 0),
            ("wm size", "Physical size: 1080x2400\n", "", 0),
            ("wm density", "Physical density: 420\n", "", 0),
            ("echo hello   'big world'", "hello big world\n", "", 0),
            ("echo -n x", "x", "", 0),
            ("true", "", "", 0),
            ("false", "", "", 1),
            ("exit 3", "", "", 3),
            ("echo a; exit 4; echo b", "a\n", "", 4),
            ("false && echo no || echo yes", "yes\n", "", 0),
            (
                "nosuchcmd --flag",
                "",
                "/system/bin/sh: nosuchcmd: inaccessible or not found\n",
                127,
            ),
            ("", "", "", 0),
            (
                "echo 'open",
                "",
                "/system/bin/sh: syntax error: unterminated quoted string\n",
                1,
            ),
        ];
        for (line, stdout, stderr, code) in cases {
            assert_eq!(
                run(line),
                (stdout.to_string(), stderr.to_string(), *code),
                "{line}"
            );
        }
    }

    #[test]
    fn getprop_lists_all_properties() {
        let (stdout, _, code) = run("getprop");
        assert_eq!(code, 0);
        assert!(
            stdout.contains("[ro.product.model]: [Pixel 7]\n"),
            "{stdout}"
        );
        assert!(stdout.contains("[ro.product.manufacturer]: [Google]\n"));
    }

    #[test]
    fn battery_has_android_fields() {
        let (stdout, _, _) = run("dumpsys battery");
        assert!(stdout.contains("  level: 85\n"), "{stdout}");
        assert!(stdout.contains("  status: 2\n"));
        assert!(stdout.contains("  AC powered: true\n"));
    }

    #[test]
    fn input_is_recorded_and_bad_input_is_usage() {
        let device = DeviceProfile::generate("SIM-9", 0);
        let outcome = run_shell("input tap 5 6 && input text 'hi there'", &device);
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(
            outcome.input,
            vec![
                InputEvent::Tap { x: 5, y: 6 },
                InputEvent::Text {
                    text: "hi there".into()
                }
            ]
        );
        let (_, stderr, code) = run("input tap 1");
        assert_eq!(code, 1);
        assert!(stderr.starts_with("Usage: input"));
    }

    #[test]
    fn screencap_png_has_png_signature() {
        let device = DeviceProfile::generate("SIM-9", 2);
        let outcome = run_shell("screencap -p", &device);
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(&outcome.stdout[..8], b"\x89PNG\r\n\x1a\n");
    }
}
