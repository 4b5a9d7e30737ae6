//! WebDriver slots: the node's side of the Selenium/Appium grid (see proto/WEBDRIVER_LINK.md).
//!
//! - `config`: the `--appium`, `--appium-bin`, `--appium-caps`, `--chromedriver`, `--browser-slots` flags;
//! - `slots`: the slot inventory built from the online devices (sans-IO);
//! - `new_session`: the udid/port injection into new-session bodies (sans-IO);
//! - `headers`: which headers pass through;
//! - `browser`: the chromedriver process and its session count;
//! - `appium`: an Appium server the node starts itself (`--appium-bin`); `child`: how both run;
//! - `proxy`: one proxied request, bodies streamed both ways;
//! - `service`: the task that routes broker commands to streams and announces slots.
//!
//! ```text
//! broker --http_request/http_body--> service --(one task per stream)--> proxy --HTTP--> Appium / chromedriver
//! broker <--http_response/http_body-------------------------------------- proxy <--
//! ```

pub mod appium;
pub mod browser;
pub mod child;
pub mod config;
pub mod headers;
pub mod new_session;
pub mod proxy;
pub mod service;
pub mod slots;

pub use config::{WebDriverArgs, WebDriverConfig, WebDriverConfigError};
pub use service::{WebDriverCommand, WebDriverHandle, WebDriverStopped, spawn_webdriver_service};
