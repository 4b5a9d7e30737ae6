//! WebDriver slot flags (`--appium`, `--appium-caps`, `--chromedriver`, `--browser-slots`,
//! timeouts) and their validation into a [`WebDriverConfig`].

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

/// The most concurrent sessions a browser slot may offer.
pub const MAX_BROWSER_SLOTS: u32 = 64;

/// WebDriver slot flags, flattened into the node's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct WebDriverArgs {
    /// An Appium server (http://HOST:PORT[/base-path]) to put one WebDriver slot per online
    /// Android device behind. The node does not start it (see --appium-bin).
    #[arg(
        long,
        env = "FARM_APPIUM",
        value_name = "URL",
        conflicts_with = "appium_bin"
    )]
    pub appium: Option<String>,

    /// An Appium executable (Appium 2 or 3 with its drivers installed, e.g. `appium` from
    /// `npm i -g appium`): the node starts it on a free loopback port, announces the device
    /// slots once it answers GET /status, restarts it when it dies, and stops it with the node.
    #[arg(long, env = "FARM_APPIUM_BIN", value_name = "PATH")]
    pub appium_bin: Option<PathBuf>,

    /// Extra capabilities (a JSON object) every Appium slot advertises; its keys override the
    /// node's, e.g. '{"platformName":"Fake","appium:automationName":"Fake"}'. Needs --appium
    /// or --appium-bin.
    #[arg(long, env = "FARM_APPIUM_CAPS", value_name = "JSON")]
    pub appium_caps: Option<String>,

    /// A chromedriver binary: the node runs one process of it (on first use) behind a
    /// browser slot, e.g. /usr/bin/chromedriver.
    #[arg(long, env = "FARM_CHROMEDRIVER", value_name = "PATH")]
    pub chromedriver: Option<PathBuf>,

    /// How many sessions the browser slot runs at once (1..=64) [default: 1 with --chromedriver].
    #[arg(long, env = "FARM_BROWSER_SLOTS", value_name = "N")]
    pub browser_slots: Option<u32>,

    /// How long a slot may take to answer a new-session request, in seconds (1..=3600).
    #[arg(
        long,
        env = "FARM_WEBDRIVER_NEW_SESSION_TIMEOUT_SECS",
        value_name = "SECS",
        default_value_t = 300
    )]
    pub webdriver_new_session_timeout_secs: u64,

    /// How long a slot may take to answer any other request, and the longest pause inside a
    /// body, in seconds (1..=3600).
    #[arg(
        long,
        env = "FARM_WEBDRIVER_COMMAND_TIMEOUT_SECS",
        value_name = "SECS",
        default_value_t = 120
    )]
    pub webdriver_command_timeout_secs: u64,
}

/// Where a slot's HTTP server is: `http://{authority}{prefix}` (prefix empty or `/x/y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotEndpoint {
    pub authority: String,
    pub prefix: String,
}

impl SlotEndpoint {
    /// The URL of `path` (which starts with `/`) on this endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{}", self.authority, self.prefix, path)
    }
}

/// Where the device slots' Appium server comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppiumServer {
    /// `--appium URL`: a server someone else runs.
    Remote(SlotEndpoint),
    /// `--appium-bin PATH`: the node starts it.
    Start(PathBuf),
}

/// The Appium server behind the device slots.
#[derive(Debug, Clone, PartialEq)]
pub struct AppiumConfig {
    pub server: AppiumServer,
    /// `--appium-caps`: merged over every device slot's capabilities.
    pub extra_capabilities: Map<String, Value>,
}

/// The chromedriver behind the browser slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserConfig {
    pub chromedriver: PathBuf,
    pub max_sessions: u32,
}

/// The validated WebDriver configuration; the default offers no slots.
#[derive(Debug, Clone, PartialEq)]
pub struct WebDriverConfig {
    pub appium: Option<AppiumConfig>,
    pub browser: Option<BrowserConfig>,
    pub new_session_timeout: Duration,
    pub command_timeout: Duration,
}

impl Default for WebDriverConfig {
    fn default() -> Self {
        Self {
            appium: None,
            browser: None,
            new_session_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(120),
        }
    }
}

/// Why the WebDriver flags were refused; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebDriverConfigError {
    #[error("--appium {url:?} is not usable: {reason} (expected http://HOST:PORT)")]
    BadAppium { url: String, reason: String },
    #[error(
        "--appium-caps is not usable: {0} (expected a JSON object like '{{\"platformName\":\"Fake\"}}')"
    )]
    BadAppiumCaps(String),
    #[error(
        "--appium-caps needs --appium or --appium-bin (the Appium server the device slots are behind)"
    )]
    CapsWithoutAppium,
    #[error(
        "--appium-bin {0:?} is not an executable file: install Appium (npm i -g appium) and pass the path of `appium`"
    )]
    BadAppiumBin(PathBuf),
    #[error(
        "--chromedriver {0:?} is not an executable file: install chromium-driver and pass /usr/bin/chromedriver"
    )]
    BadChromedriver(PathBuf),
    #[error("--browser-slots {0} is out of range: use 1 to 64")]
    BadBrowserSlots(u32),
    #[error("--browser-slots needs --chromedriver (the driver the browser slot runs)")]
    SlotsWithoutChromedriver,
    #[error("--{flag} {value} is out of range: use 1 to 3600 seconds")]
    BadTimeout { flag: &'static str, value: u64 },
}

impl WebDriverConfig {
    /// Validates the flags.
    pub fn from_args(args: WebDriverArgs) -> Result<Self, WebDriverConfigError> {
        let server = match (args.appium, args.appium_bin) {
            (Some(url), _) => Some(AppiumServer::Remote(parse_endpoint(&url)?)),
            (None, Some(path)) if is_executable_file(&path) => Some(AppiumServer::Start(path)),
            (None, Some(path)) => return Err(WebDriverConfigError::BadAppiumBin(path)),
            (None, None) => None,
        };
        let appium = match server {
            Some(server) => Some(AppiumConfig {
                server,
                extra_capabilities: match args.appium_caps {
                    Some(json) => parse_caps(&json)?,
                    None => Map::new(),
                },
            }),
            None if args.appium_caps.is_some() => {
                return Err(WebDriverConfigError::CapsWithoutAppium);
            }
            None => None,
        };
        let browser = match args.chromedriver {
            Some(path) => {
                if !is_executable_file(&path) {
                    return Err(WebDriverConfigError::BadChromedriver(path));
                }
                let max_sessions = args.browser_slots.unwrap_or(1);
                if !(1..=MAX_BROWSER_SLOTS).contains(&max_sessions) {
                    return Err(WebDriverConfigError::BadBrowserSlots(max_sessions));
                }
                Some(BrowserConfig {
                    chromedriver: path,
                    max_sessions,
                })
            }
            None if args.browser_slots.is_some() => {
                return Err(WebDriverConfigError::SlotsWithoutChromedriver);
            }
            None => None,
        };
        Ok(Self {
            appium,
            browser,
            new_session_timeout: timeout(
                "webdriver-new-session-timeout-secs",
                args.webdriver_new_session_timeout_secs,
            )?,
            command_timeout: timeout(
                "webdriver-command-timeout-secs",
                args.webdriver_command_timeout_secs,
            )?,
        })
    }
}

fn timeout(flag: &'static str, value: u64) -> Result<Duration, WebDriverConfigError> {
    if (1..=3600).contains(&value) {
        Ok(Duration::from_secs(value))
    } else {
        Err(WebDriverConfigError::BadTimeout { flag, value })
    }
}

/// Parses `http://HOST:PORT[/prefix]` (no query, no TLS).
pub fn parse_endpoint(url: &str) -> Result<SlotEndpoint, WebDriverConfigError> {
    let bad = |reason: &str| WebDriverConfigError::BadAppium {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("TLS is not supported")),
        _ => return Err(bad("the scheme must be http")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    if uri.query().is_some() {
        return Err(bad("a query is not allowed"));
    }
    Ok(SlotEndpoint {
        authority: authority.as_str().to_string(),
        prefix: uri.path().trim_end_matches('/').to_string(),
    })
}

fn parse_caps(json: &str) -> Result<Map<String, Value>, WebDriverConfigError> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(WebDriverConfigError::BadAppiumCaps(
            "it is JSON but not an object".into(),
        )),
        Err(error) => Err(WebDriverConfigError::BadAppiumCaps(error.to_string())),
    }
}

fn is_executable_file(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: WebDriverArgs,
    }

    fn parse(args: &[&str]) -> Result<WebDriverConfig, WebDriverConfigError> {
        let wrapper = Wrapper::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("test arguments parse");
        WebDriverConfig::from_args(wrapper.args)
    }

    #[test]
    fn defaults_offer_no_slots() {
        assert_eq!(parse(&[]).expect("valid"), WebDriverConfig::default());
    }

    #[test]
    fn appium_bin_is_started_by_the_node_and_excludes_appium() {
        let config = parse(&["--appium-bin", "/bin/sh", "--appium-caps", "{}"]).expect("valid");
        let appium = config.appium.expect("appium");
        assert_eq!(appium.server, AppiumServer::Start("/bin/sh".into()));
        let error = parse(&["--appium-bin", "/nonexistent/appium"]).expect_err("missing");
        assert!(error.to_string().contains("--appium-bin"), "{error}");
        let both = Wrapper::try_parse_from([
            "x",
            "--appium",
            "http://127.0.0.1:4723",
            "--appium-bin",
            "/bin/sh",
        ]);
        let error = both.expect_err("one or the other").to_string();
        assert!(
            error.contains("--appium-bin") && error.contains("--appium"),
            "{error}"
        );
    }

    #[test]
    fn every_flag() {
        let config = parse(&[
            "--appium",
            "http://127.0.0.1:4723/wd/hub/",
            "--appium-caps",
            r#"{"platformName":"Fake"}"#,
            "--chromedriver",
            "/bin/sh",
            "--browser-slots",
            "3",
            "--webdriver-new-session-timeout-secs",
            "30",
            "--webdriver-command-timeout-secs",
            "5",
        ])
        .expect("valid");
        let appium = config.appium.expect("appium");
        let AppiumServer::Remote(endpoint) = &appium.server else {
            panic!("a remote server: {:?}", appium.server);
        };
        assert_eq!(endpoint.authority, "127.0.0.1:4723");
        assert_eq!(
            endpoint.url("/session"),
            "http://127.0.0.1:4723/wd/hub/session"
        );
        assert_eq!(appium.extra_capabilities["platformName"], "Fake");
        let browser = config.browser.expect("browser");
        assert_eq!(browser.max_sessions, 3);
        assert_eq!(config.new_session_timeout, Duration::from_secs(30));
        assert_eq!(config.command_timeout, Duration::from_secs(5));
        let default_slots = parse(&["--chromedriver", "/bin/sh"]).expect("valid");
        assert_eq!(default_slots.browser.expect("browser").max_sessions, 1);
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        let cases: [(&[&str], &str); 11] = [
            (&["--appium", "127.0.0.1:4723"], "--appium"),
            (&["--appium", "https://h:1"], "TLS"),
            (&["--appium", "http://h:1/?x=1"], "query"),
            (&["--appium", "http://u:p@h:1"], "credentials"),
            (
                &["--appium", "http://h:1", "--appium-caps", "[1]"],
                "object",
            ),
            (
                &["--appium", "http://h:1", "--appium-caps", "{"],
                "--appium-caps",
            ),
            (&["--appium-caps", "{}"], "needs --appium"),
            (&["--chromedriver", "/nonexistent/cd"], "--chromedriver"),
            (
                &["--chromedriver", "/bin/sh", "--browser-slots", "0"],
                "1 to 64",
            ),
            (&["--browser-slots", "2"], "needs --chromedriver"),
            (&["--webdriver-command-timeout-secs", "0"], "1 to 3600"),
        ];
        for (args, needle) in cases {
            let error = parse(args).expect_err("invalid").to_string();
            assert!(error.contains(needle), "{args:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }
}
