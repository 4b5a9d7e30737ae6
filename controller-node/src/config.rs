//! The node's configuration: command-line flags and environment, validated before anything starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::capture::CaptureConfig;
use crate::webdriver::{WebDriverArgs, WebDriverConfig, WebDriverConfigError};

/// The farm controller node: finds Android devices through the local adb server and USB,
/// and keeps one outbound gRPC stream to the broker.
#[derive(Debug, Clone, Parser)]
#[command(name = "farm-node", version)]
pub struct Cli {
    /// The broker's gRPC address (http://HOST:PORT).
    #[arg(
        long,
        env = "FARM_BROKER",
        value_name = "URL",
        default_value = "http://127.0.0.1:4444"
    )]
    pub broker: String,

    /// The node token (required), created with `farm-broker token create --role node --name NAME`.
    #[arg(
        long,
        env = "FARM_NODE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// The site (location) this node's devices belong to.
    #[arg(
        long,
        env = "FARM_SITE",
        value_name = "NAME",
        default_value = "default"
    )]
    pub site: String,

    /// This node's unique id at the broker [default: the host name].
    #[arg(long, env = "FARM_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// The local adb server to track devices on (IPv4:PORT). The node never starts one.
    #[arg(
        long,
        env = "FARM_ADB_SERVER",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:5037"
    )]
    pub adb_server: String,

    /// How often to send a heartbeat with host metrics and USB devices, in milliseconds (100..=60000).
    #[arg(
        long,
        env = "FARM_HEARTBEAT_MS",
        value_name = "MS",
        default_value_t = 1000
    )]
    pub heartbeat_ms: u64,

    /// The scrcpy server jar (scrcpy-server-vX.Y.Z from the scrcpy release) pushed to devices
    /// for live sessions; without it the node falls back to `screenrecord` and `input`.
    #[arg(long, env = "FARM_SCRCPY_SERVER", value_name = "PATH")]
    pub scrcpy_server: Option<PathBuf>,

    /// The version of that jar (the server refuses to start under another version).
    #[arg(
        long,
        env = "FARM_SCRCPY_VERSION",
        value_name = "VERSION",
        default_value = "3.3.4"
    )]
    pub scrcpy_version: String,

    /// The longest side of live video, in pixels (0 = the device's own size; else 128..=4096).
    #[arg(
        long,
        env = "FARM_MAX_VIDEO_SIZE",
        value_name = "PIXELS",
        default_value_t = 1280
    )]
    pub max_video_size: u32,

    /// The address live sessions (WebRTC) bind and advertise as ICE host candidates
    /// [default: the address the node uses to reach the broker; 127.0.0.1 for a loopback broker].
    #[arg(long, env = "FARM_WEBRTC_IP", value_name = "IP")]
    pub webrtc_ip: Option<String>,

    /// The UDP ports live sessions use, one per session, e.g. 50000-50100 [default: any].
    #[arg(long, env = "FARM_WEBRTC_PORTS", value_name = "MIN-MAX")]
    pub webrtc_ports: Option<String>,

    /// WebDriver slots (see proto/WEBDRIVER_LINK.md).
    #[command(flatten)]
    pub webdriver: WebDriverArgs,

    /// Threads that run the node's async work. One is the default: the node relays small
    /// messages and video without transcoding (blocking adb reads have threads of their own),
    /// and a single thread spares every WebDriver command and input event the cross-thread
    /// wake-ups that cost more latency than they save. Raise it for many concurrent viewers.
    #[arg(
        long,
        env = "FARM_WORKER_THREADS",
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub worker_threads: u16,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The broker URL (http://...).
    pub broker_url: String,
    pub token: String,
    pub site: String,
    pub node_id: String,
    /// This machine's host name, sent in `hello`.
    pub hostname: String,
    pub adb_server: SocketAddrV4,
    pub heartbeat_interval: Duration,
    /// How long reading one device's properties may take before it counts as failed.
    pub device_props_timeout: Duration,
    /// Screen capture for live sessions.
    pub capture: CaptureConfig,
    /// Where live sessions bind; `None`: derived from the broker address at start.
    pub webrtc_ip: Option<IpAddr>,
    /// The UDP ports for live sessions; `None`: ephemeral ports.
    pub webrtc_ports: Option<RangeInclusive<u16>>,
    /// WebDriver slots (Appium per device, chromedriver).
    pub webdriver: WebDriverConfig,
    /// Threads of the async runtime.
    pub worker_threads: usize,
}

/// Why a configuration was refused; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--token (or FARM_NODE_TOKEN) is required: create one with `farm-broker token create --role node --name NAME`"
    )]
    MissingToken,
    #[error("--token must be printable ASCII without spaces")]
    BadToken,
    #[error("--broker {url:?} is not usable: {reason} (expected http://HOST:PORT)")]
    BadBroker { url: String, reason: String },
    #[error("--{flag} {value:?} is not usable: use 1-64 letters, digits, '.', '_' or '-'")]
    BadName { flag: &'static str, value: String },
    #[error("could not read the host name ({0}): pass --node-id")]
    NoHostname(String),
    #[error("--adb-server {0:?} is not an IPv4 address and port like 127.0.0.1:5037")]
    BadAdbServer(String),
    #[error("--heartbeat-ms {0} is out of range: use 100 to 60000")]
    BadHeartbeat(u64),
    #[error(
        "--scrcpy-server {0:?} is not a readable file: pass the scrcpy-server jar of a scrcpy release"
    )]
    BadScrcpyServer(PathBuf),
    #[error("--scrcpy-version {0:?} is not a version like 3.3.4")]
    BadScrcpyVersion(String),
    #[error("--max-video-size {0} is out of range: use 0 (the device's size) or 128 to 4096")]
    BadMaxVideoSize(u32),
    #[error(
        "--webrtc-ip {0:?} is not usable: give the IP address of an interface browsers can reach (not 0.0.0.0)"
    )]
    BadWebrtcIp(String),
    #[error(
        "--webrtc-ports {0:?} is not usable: give a range like 50000-50100 (ports 1 to 65535, MIN <= MAX)"
    )]
    BadWebrtcPorts(String),
    #[error(transparent)]
    WebDriver(#[from] WebDriverConfigError),
}

impl Config {
    /// Validates flags into a configuration; the host name is read when `--node-id` is unset.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let hostname = hostname::get()
            .map(|name| name.to_string_lossy().into_owned())
            .map_err(|error| error.to_string());
        Self::from_cli_with_hostname(cli, hostname)
    }

    /// As [`Config::from_cli`], with the host name given (for tests).
    pub fn from_cli_with_hostname(
        cli: Cli,
        hostname: Result<String, String>,
    ) -> Result<Self, ConfigError> {
        let token = cli.token.ok_or(ConfigError::MissingToken)?;
        if token.is_empty() {
            return Err(ConfigError::MissingToken);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::BadToken);
        }
        let broker_url = validate_broker(&cli.broker)?;
        let site = validate_name("site", cli.site)?;
        let hostname_or_empty = hostname.clone().unwrap_or_default();
        let node_id = match cli.node_id {
            Some(id) => validate_name("node-id", id)?,
            None => {
                let name = hostname.map_err(ConfigError::NoHostname)?;
                // Host names may carry a domain; the short name is what people recognise.
                let short = name.split('.').next().unwrap_or_default().to_string();
                validate_name("node-id", short)?
            }
        };
        let adb_server = parse_adb_server(&cli.adb_server)?;
        if !(100..=60_000).contains(&cli.heartbeat_ms) {
            return Err(ConfigError::BadHeartbeat(cli.heartbeat_ms));
        }
        let capture = validate_capture(cli.scrcpy_server, cli.scrcpy_version, cli.max_video_size)?;
        let webdriver = WebDriverConfig::from_args(cli.webdriver)?;
        Ok(Self {
            broker_url,
            token,
            site,
            node_id,
            hostname: hostname_or_empty,
            adb_server,
            heartbeat_interval: Duration::from_millis(cli.heartbeat_ms),
            device_props_timeout: Duration::from_secs(10),
            capture,
            webrtc_ip: cli.webrtc_ip.as_deref().map(parse_webrtc_ip).transpose()?,
            webrtc_ports: cli
                .webrtc_ports
                .as_deref()
                .map(parse_port_range)
                .transpose()?,
            webdriver,
            worker_threads: usize::from(cli.worker_threads),
        })
    }
}

fn validate_broker(url: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::BadBroker {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: tonic::codegen::http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("TLS is not supported yet")),
        _ => return Err(bad("the scheme must be http")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(url.to_string())
}

fn validate_capture(
    scrcpy_server: Option<PathBuf>,
    scrcpy_version: String,
    max_size: u32,
) -> Result<CaptureConfig, ConfigError> {
    if let Some(path) = &scrcpy_server
        && std::fs::File::open(path).map_or(true, |f| f.metadata().map_or(true, |m| !m.is_file()))
    {
        return Err(ConfigError::BadScrcpyServer(path.clone()));
    }
    let version_ok = !scrcpy_version.is_empty()
        && scrcpy_version.len() <= 32
        && scrcpy_version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !version_ok {
        return Err(ConfigError::BadScrcpyVersion(scrcpy_version));
    }
    if max_size != 0 && !(128..=4096).contains(&max_size) {
        return Err(ConfigError::BadMaxVideoSize(max_size));
    }
    Ok(CaptureConfig {
        scrcpy_server,
        scrcpy_version,
        max_size,
    })
}

fn validate_name(flag: &'static str, value: String) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(value)
    } else {
        Err(ConfigError::BadName { flag, value })
    }
}

fn parse_adb_server(value: &str) -> Result<SocketAddrV4, ConfigError> {
    let bad = || ConfigError::BadAdbServer(value.to_string());
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let ip = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse().map_err(|_| bad())?
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(SocketAddrV4::new(ip, port))
}

fn parse_webrtc_ip(value: &str) -> Result<IpAddr, ConfigError> {
    match value.trim().parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Ok(ip),
        _ => Err(ConfigError::BadWebrtcIp(value.to_string())),
    }
}

fn parse_port_range(value: &str) -> Result<RangeInclusive<u16>, ConfigError> {
    let bad = || ConfigError::BadWebrtcPorts(value.to_string());
    let (min, max) = value.split_once('-').ok_or_else(bad)?;
    let min: u16 = min.trim().parse().map_err(|_| bad())?;
    let max: u16 = max.trim().parse().map_err(|_| bad())?;
    if min == 0 || min > max {
        return Err(bad());
    }
    Ok(min..=max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("farm-node").chain(args.iter().copied()))
            .expect("test arguments parse");
        Config::from_cli_with_hostname(cli, Ok("rack-7.example.org".to_string()))
    }

    #[test]
    fn defaults() {
        let config = parse(&["--token", "t0k"]).expect("valid");
        assert_eq!(config.broker_url, "http://127.0.0.1:4444");
        assert_eq!(config.site, "default");
        assert_eq!(config.node_id, "rack-7");
        assert_eq!(config.hostname, "rack-7.example.org");
        assert_eq!(
            config.adb_server,
            "127.0.0.1:5037".parse::<SocketAddrV4>().expect("literal")
        );
        assert_eq!(config.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(config.capture, CaptureConfig::default());
        assert_eq!(config.worker_threads, 1);
    }

    #[test]
    fn worker_threads_are_bounded() {
        let config = parse(&["--token", "t", "--worker-threads", "4"]).expect("valid");
        assert_eq!(config.worker_threads, 4);
        for bad in ["0", "257", "many"] {
            let args = ["farm-node", "--token", "t", "--worker-threads", bad];
            let error = Cli::try_parse_from(args).expect_err("refused").to_string();
            assert!(error.contains("--worker-threads"), "{bad}: {error}");
        }
    }

    #[test]
    fn capture_flags() {
        let jar = tempfile::NamedTempFile::new().expect("temp file");
        let path = jar.path().to_string_lossy().into_owned();
        let config = parse(&[
            "--token",
            "t",
            "--scrcpy-server",
            &path,
            "--scrcpy-version",
            "3.3.1",
            "--max-video-size",
            "0",
        ])
        .expect("valid");
        assert_eq!(config.capture.scrcpy_server.as_deref(), Some(jar.path()));
        assert_eq!(config.capture.scrcpy_version, "3.3.1");
        assert_eq!(config.capture.max_size, 0);
        let cases: [(&[&str], &str); 4] = [
            (
                &["--token", "t", "--scrcpy-server", "/nonexistent/x.jar"],
                "--scrcpy-server",
            ),
            (&["--token", "t", "--scrcpy-server", "/"], "--scrcpy-server"),
            (
                &["--token", "t", "--scrcpy-version", "3 3"],
                "--scrcpy-version",
            ),
            (
                &["--token", "t", "--max-video-size", "64"],
                "--max-video-size",
            ),
        ];
        for (args, needle) in cases {
            let error = parse(args).expect_err("invalid").to_string();
            assert!(error.contains(needle), "{args:?}: {error}");
        }
    }

    #[test]
    fn every_flag() {
        let config = parse(&[
            "--broker",
            "http://10.0.0.1:9000",
            "--token",
            "abc",
            "--site",
            "paris-1",
            "--node-id",
            "node_a",
            "--adb-server",
            "localhost:15037",
            "--heartbeat-ms",
            "250",
        ])
        .expect("valid");
        assert_eq!(config.broker_url, "http://10.0.0.1:9000");
        assert_eq!(config.node_id, "node_a");
        assert_eq!(
            config.adb_server,
            "127.0.0.1:15037".parse::<SocketAddrV4>().expect("literal")
        );
        assert_eq!(config.heartbeat_interval, Duration::from_millis(250));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let cases: [(&[&str], &str); 9] = [
            (&[], "--token"),
            (&["--token", ""], "--token"),
            (&["--token", "a b"], "printable"),
            (&["--token", "t", "--broker", "grpc://x:1"], "scheme"),
            (&["--token", "t", "--broker", "https://x:1"], "TLS"),
            (&["--token", "t", "--site", "a/b"], "--site"),
            (&["--token", "t", "--node-id", ""], "--node-id"),
            (
                &["--token", "t", "--adb-server", "[::1]:5037"],
                "--adb-server",
            ),
            (&["--token", "t", "--heartbeat-ms", "5"], "--heartbeat-ms"),
        ];
        for (args, needle) in cases {
            let error = parse(args).expect_err("invalid").to_string();
            assert!(error.contains(needle), "{args:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }

    #[test]
    fn no_hostname_needs_a_node_id() {
        let cli = Cli::try_parse_from(["farm-node", "--token", "t"]).expect("parses");
        let error = Config::from_cli_with_hostname(cli, Err("boom".into())).expect_err("invalid");
        assert!(error.to_string().contains("--node-id"));
    }

    #[test]
    fn webrtc_flags() {
        let config = parse(&["--token", "t"]).expect("valid");
        assert_eq!((config.webrtc_ip, config.webrtc_ports), (None, None));
        let config = parse(&[
            "--token",
            "t",
            "--webrtc-ip",
            "10.1.2.3",
            "--webrtc-ports",
            "50000-50100",
        ])
        .expect("valid");
        assert_eq!(config.webrtc_ip, Some(IpAddr::from([10, 1, 2, 3])));
        assert_eq!(config.webrtc_ports, Some(50000..=50100));
        for (flag, value) in [
            ("--webrtc-ip", "0.0.0.0"),
            ("--webrtc-ip", "host.example"),
            ("--webrtc-ports", "5000"),
            ("--webrtc-ports", "0-10"),
            ("--webrtc-ports", "20-10"),
            ("--webrtc-ports", "1-70000"),
        ] {
            let error = parse(&["--token", "t", flag, value]).expect_err(value);
            assert!(error.to_string().contains(flag), "{error}");
        }
    }
}
