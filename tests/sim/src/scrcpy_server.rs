//! The scrcpy server's start command (`CLASSPATH=JAR app_process / com.genymobile.scrcpy.Server
//! VERSION key=value...`): parsing, the checks the real server makes, and its log lines.

use crate::device_profile::DeviceProfile;
use crate::shell_words::{Token, tokenize};

/// The server class the command must name.
pub const SERVER_CLASS: &str = "com.genymobile.scrcpy.Server";
/// The version family the simulated server speaks.
pub const VERSION_PREFIX: &str = "3.3.";
/// The version the simulated server reports when the client's does not match.
pub const SERVER_VERSION: &str = "3.3.4";

/// Options of one server run that the simulator acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrcpyOptions {
    /// 31-bit id naming the sockets `scrcpy_%08x`.
    pub scid: u32,
    pub video: bool,
    pub audio: bool,
    pub control: bool,
    pub max_size: u32,
    pub tunnel_forward: bool,
    pub send_dummy_byte: bool,
    pub send_device_meta: bool,
    pub send_codec_meta: bool,
    pub send_frame_meta: bool,
}

impl ScrcpyOptions {
    /// The abstract socket name the client opens.
    pub fn socket_name(&self) -> String {
        format!("scrcpy_{:08x}", self.scid)
    }

    /// How many sockets the client opens, in order video, audio, control.
    pub fn socket_count(&self) -> usize {
        usize::from(self.video) + usize::from(self.audio) + usize::from(self.control)
    }
}

/// A start command that the real server would refuse: `stderr` and exit code 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRefused {
    pub stderr: String,
}

/// Options every 3.3 server knows but the simulator ignores.
const IGNORED_OPTIONS: &[&str] = &[
    "log_level",
    "video_bit_rate",
    "audio_bit_rate",
    "max_fps",
    "angle",
    "crop",
    "display_id",
    "show_touches",
    "stay_awake",
    "video_codec_options",
    "audio_codec_options",
    "video_encoder",
    "audio_encoder",
    "power_off_on_close",
    "clipboard_autosync",
    "downsize_on_error",
    "cleanup",
    "power_on",
    "video_source",
    "audio_source",
    "audio_dup",
    "list_encoders",
    "list_displays",
    "list_cameras",
    "list_camera_sizes",
    "list_apps",
    "camera_id",
    "camera_size",
    "camera_facing",
    "camera_ar",
    "camera_fps",
    "camera_high_speed",
    "new_display",
    "vd_destroy_content",
    "vd_system_decorations",
    "capture_orientation",
    "display_ime_policy",
    "audio_codec",
];

/// `None` when `line` does not start the scrcpy server; otherwise its options, or why the real
/// server would exit with an error. `jar_exists` answers whether a file was pushed to a path.
pub fn parse_start(
    line: &str,
    jar_exists: impl Fn(&str) -> bool,
) -> Option<Result<ScrcpyOptions, StartRefused>> {
    let words: Vec<String> = tokenize(line)
        .ok()?
        .into_iter()
        .filter_map(|token| match token {
            Token::Word(word) => Some(word),
            _ => None,
        })
        .collect();
    let mut classpath = None;
    let mut rest = words.as_slice();
    while let Some((first, tail)) = rest.split_first() {
        match first.split_once('=') {
            Some(("CLASSPATH", value)) => classpath = Some(value.to_string()),
            Some(_) => {}
            None => break,
        }
        rest = tail;
    }
    let (program, args) = rest.split_first()?;
    if program != "app_process" || !args.iter().any(|arg| arg == SERVER_CLASS) {
        return None;
    }
    Some(check(classpath, args, jar_exists))
}

fn refuse(message: String) -> Result<ScrcpyOptions, StartRefused> {
    Err(StartRefused {
        stderr: format!("[server] ERROR: {message}\n"),
    })
}

fn check(
    classpath: Option<String>,
    args: &[String],
    jar_exists: impl Fn(&str) -> bool,
) -> Result<ScrcpyOptions, StartRefused> {
    let class_found = classpath
        .as_deref()
        .is_some_and(|path| path.split(':').any(&jar_exists));
    if !class_found {
        return Err(StartRefused {
            stderr: format!(
                "Error: Could not find class '{SERVER_CLASS}' (CLASSPATH={})\n",
                classpath.unwrap_or_default()
            ),
        });
    }
    let after_class = args
        .iter()
        .skip_while(|arg| *arg != SERVER_CLASS)
        .skip(1)
        .collect::<Vec<_>>();
    let Some((version, options)) = after_class.split_first() else {
        return refuse("Missing client version".to_string());
    };
    if !version.starts_with(VERSION_PREFIX) {
        return refuse(format!(
            "The server version ({SERVER_VERSION}) does not match the client ({version})"
        ));
    }
    let mut parsed = ScrcpyOptions {
        scid: u32::MAX,
        video: true,
        audio: true,
        control: true,
        max_size: 0,
        tunnel_forward: false,
        send_dummy_byte: true,
        send_device_meta: true,
        send_codec_meta: true,
        send_frame_meta: true,
    };
    for option in options {
        let Some((key, value)) = option.split_once('=') else {
            return refuse(format!("Invalid key=value pair: \"{option}\""));
        };
        let flag = value == "true";
        match key {
            "scid" => match u32::from_str_radix(value, 16) {
                Ok(scid) if scid <= 0x7FFF_FFFF => parsed.scid = scid,
                _ => return refuse(format!("SCID must be a 31-bit hex number: {value}")),
            },
            "video" => parsed.video = flag,
            "audio" => parsed.audio = flag,
            "control" => parsed.control = flag,
            "tunnel_forward" => parsed.tunnel_forward = flag,
            "send_dummy_byte" => parsed.send_dummy_byte = flag,
            "send_device_meta" => parsed.send_device_meta = flag,
            "send_codec_meta" => parsed.send_codec_meta = flag,
            "send_frame_meta" => parsed.send_frame_meta = flag,
            "raw_stream" if flag => {
                parsed.send_dummy_byte = false;
                parsed.send_device_meta = false;
                parsed.send_codec_meta = false;
                parsed.send_frame_meta = false;
            }
            "raw_stream" => {}
            "max_size" => match value.parse::<u32>() {
                Ok(size) => parsed.max_size = size & !7,
                Err(_) => return refuse(format!("Invalid max_size: {value}")),
            },
            "video_codec" if value != "h264" => {
                return refuse(format!(
                    "Could not find a {value} encoder (the simulator encodes h264 only)"
                ));
            }
            "video_codec" => {}
            _ if IGNORED_OPTIONS.contains(&key) => {}
            _ => return refuse(format!("Unknown server option: {key}")),
        }
    }
    if !parsed.tunnel_forward {
        return refuse(
            "Only tunnel_forward=true is simulated (the device cannot dial the host)".to_string(),
        );
    }
    if parsed.scid == u32::MAX {
        parsed.scid = 0;
    }
    Ok(parsed)
}

/// The log line the server prints when it starts.
pub fn device_log_line(profile: &DeviceProfile) -> String {
    format!(
        "[server] INFO: Device: [{}] {} (Android {})\n",
        profile.manufacturer, profile.model, profile.android_version
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAR: &str = "/data/local/tmp/scrcpy-server.jar";

    fn start(line: &str) -> Option<Result<ScrcpyOptions, StartRefused>> {
        parse_start(line, |path| path == JAR)
    }

    #[test]
    fn parses_the_clients_command() {
        let line = format!(
            "CLASSPATH={JAR} app_process / {SERVER_CLASS} 3.3.4 scid=1a2b3c4d log_level=info \
             tunnel_forward=true audio=false control=true max_size=1280 video_codec=h264 cleanup=false"
        );
        let options = start(&line).expect("a server start").expect("accepted");
        assert_eq!(options.scid, 0x1a2b_3c4d);
        assert_eq!(options.socket_name(), "scrcpy_1a2b3c4d");
        assert!(options.video && !options.audio && options.control);
        assert_eq!(options.max_size, 1280);
        assert_eq!(options.socket_count(), 2);
    }

    #[test]
    fn refuses_like_the_real_server() {
        let base = format!("CLASSPATH={JAR} app_process / {SERVER_CLASS}");
        let refused = |line: String| start(&line).expect("a server start").expect_err("refused");
        let wrong = refused(format!("{base} 2.7 scid=00000001 tunnel_forward=true"));
        assert!(
            wrong.stderr.contains("does not match the client (2.7)"),
            "{wrong:?}"
        );
        let unknown = refused(format!("{base} 3.3.1 tunnel_forward=true bogus=1"));
        assert!(unknown.stderr.contains("Unknown server option: bogus"));
        let missing = start(&format!(
            "CLASSPATH=/data/local/tmp/other.jar app_process / {SERVER_CLASS} 3.3.4"
        ))
        .expect("a server start")
        .expect_err("no jar");
        assert!(missing.stderr.contains("Could not find class"));
        assert!(
            refused(format!("{base} 3.3.4 scid=zz tunnel_forward=true"))
                .stderr
                .contains("SCID")
        );
        assert!(
            refused(base.clone())
                .stderr
                .contains("Missing client version")
        );
        // Other commands are not server starts.
        assert_eq!(start("echo app_process"), None);
        assert_eq!(start("app_process / com.example.Main"), None);
        assert_eq!(start("'unterminated"), None);
    }
}
