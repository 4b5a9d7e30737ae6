//! farmctl's command line: global flags, subcommands and the `--help` text (examples, exit codes).

use clap::{Args, Parser, Subcommand, ValueEnum};

const GLOBAL: &str = "Global options";

const AFTER_HELP: &str = "\
Examples:
  export FARM_BROKER=http://broker.lab:4444 FARM_TOKEN=...   # once per shell
  farmctl devices --state available --platform android
  farmctl device R58M1234ABC
  farmctl reserve --device R58M1234ABC --ttl 600
  farmctl reserve --model 'Pixel 7' --tag usb3 --wait 120
  farmctl reservations --all --holder ci
  farmctl sessions --kind webdriver --holder ci

In scripts, use --json (stable keys, RFC 3339 UTC times) with jq, or reserve -q:
  LEASE=$(farmctl --json reserve --platform android --wait 300 | jq -r .lease_id)
  LEASE=$(farmctl reserve -q --platform android --wait 300)
  trap 'farmctl release \"$LEASE\"' EXIT
  farmctl --json devices --state available | jq -r '.[].id'

Exit codes:
  0  ok
  1  any other error
  2  usage error (bad flags or broker URL; or the broker said INVALID_ARGUMENT)
  3  not found (no such device or lease)
  4  conflict or busy (device reserved, lease ended, nothing free within --wait)
  5  authentication or permission (no token, bad token, not allowed)
  6  broker unreachable (not running, wrong --broker, network down)

Errors are one line on stderr: `farmctl: <message>`.";

/// farmctl: list, reserve and release devices on a device-farm broker.
#[derive(Debug, Parser)]
#[command(name = "farmctl", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    /// The broker's gRPC URL.
    #[arg(
        long,
        env = "FARM_BROKER",
        default_value = "http://127.0.0.1:4444",
        global = true,
        value_name = "URL",
        help_heading = GLOBAL
    )]
    pub broker: String,

    /// The API token (prefer the env var: flags show up in `ps`).
    #[arg(
        long,
        env = "FARM_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN",
        help_heading = GLOBAL
    )]
    pub token: Option<String>,

    /// Machine-readable output: JSON on stdout (an object, or an array for lists).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List devices matching every filter given (none: all devices).
    Devices(DevicesArgs),
    /// Show one device.
    Device {
        /// The device id (its hardware serial).
        id: String,
    },
    /// Take an exclusive lease on a device: one by id, or any device matching a selector.
    ///
    /// Without --device, the selector flags pick any matching device; with none of them
    /// given, any available device is taken. The lease ends after --ttl seconds unless
    /// renewed. Prints the lease (a one-row table; with -q only its id; with --json
    /// the lease object).
    Reserve(ReserveArgs),
    /// Push a lease's expiry to now + ttl.
    Renew {
        /// The lease id (from `reserve`).
        lease: String,
        /// New lease length in seconds [default: the lease's own ttl].
        #[arg(long, value_name = "SECS")]
        ttl: Option<u32>,
    },
    /// End a lease and free its device.
    Release {
        /// The lease id (from `reserve`).
        lease: String,
    },
    /// List leases: the active ones, newest first (with --all, ended ones too).
    Reservations(ReservationsArgs),
    /// List sessions (live and WebDriver), newest first: who, device, when, why it ended.
    Sessions(SessionsArgs),
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Only devices at this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only devices of this platform (e.g. android).
    #[arg(long)]
    pub platform: Option<String>,
    /// Only this model (ro.product.model, e.g. "Pixel 7").
    #[arg(long)]
    pub model: Option<String>,
    /// Only devices in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateFilter>,
    /// Only devices with this tag (repeat: every tag must be present).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    Available,
    Reserved,
    Offline,
    Unauthorized,
}

#[derive(Debug, Args)]
pub struct ReserveArgs {
    /// Reserve this device (by id) instead of any device matching a selector.
    #[arg(long, value_name = "ID", conflicts_with_all = ["platform", "model", "site", "tags"])]
    pub device: Option<String>,
    /// Selector: a device of this platform (e.g. android).
    #[arg(long)]
    pub platform: Option<String>,
    /// Selector: a device of this model.
    #[arg(long)]
    pub model: Option<String>,
    /// Selector: a device at this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Selector: a device with this tag (repeat: every tag must be present).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Queue up to SECS seconds for a busy device (first come, first served); 0 fails at once.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u32,
    /// Lease length in seconds [default: the broker's, 300].
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u32>,
    /// Print only the lease id (for `LEASE=$(farmctl reserve -q ...)`).
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ReservationsArgs {
    /// Include ended leases.
    #[arg(long)]
    pub all: bool,
    /// Only leases on this device.
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Only leases taken by this token name.
    #[arg(long, value_name = "NAME")]
    pub holder: Option<String>,
    /// At most N leases [default: the broker's, 100].
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Only sessions of this kind: live or webdriver.
    #[arg(long, value_parser = ["live", "webdriver"])]
    pub kind: Option<String>,
    /// Only sessions of this token name.
    #[arg(long, value_name = "NAME")]
    pub holder: Option<String>,
    /// At most N sessions [default: the broker's, 100].
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from(["farmctl", "devices", "--json", "--token", "t"])
            .expect("valid command line");
        assert!(cli.json);
        assert_eq!(cli.token.as_deref(), Some("t"));
    }

    #[test]
    fn reserve_refuses_a_device_together_with_a_selector() {
        let err = Cli::try_parse_from(["farmctl", "reserve", "--device", "d1", "--tag", "usb3"])
            .expect_err("--device conflicts with --tag");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn reserve_allows_an_empty_selector() {
        let cli = Cli::try_parse_from(["farmctl", "reserve"]).expect("empty selector is allowed");
        assert!(matches!(cli.command, Command::Reserve(_)));
    }
}
