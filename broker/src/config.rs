//! Command-line configuration of `farm-broker`, parsed and validated before any port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::domain::Role;
use crate::fleet::FleetConfig;
use crate::grid::GridConfig;
use crate::live::{IceConfig, LiveConfig};
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "farm-broker",
    version,
    about = "The device farm broker: inventory, reservations and node links on one gRPC + HTTP port",
    after_help = "Examples:\n  farm-broker token create --role admin --name ops      # prints a token once\n  farm-broker serve                                      # 127.0.0.1:4444, SQLite in ./farm-data\n  farm-broker serve --listen 0.0.0.0:4444 --database-url postgres://farm@db/farm"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC, /healthz, /metrics and the web UI on one address.
    Serve(ServeArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Where the data lives: SQLite in a directory, or a database URL.
#[derive(Debug, Args, Clone)]
pub struct StorageArgs {
    /// Directory for the embedded SQLite database (used unless --database-url is given).
    #[arg(long, env = "FARM_DATA_DIR", default_value = "./farm-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL (postgres://USER:PASS@HOST:PORT/DB) or SQLite (sqlite://PATH) URL.
    #[arg(long, env = "FARM_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl StorageArgs {
    /// The URL to open; creates the data directory for SQLite.
    pub fn url(&self) -> anyhow::Result<String> {
        match &self.database_url {
            Some(url) => Ok(url.clone()),
            None => {
                std::fs::create_dir_all(&self.data_dir).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create data directory {}: {e}",
                        self.data_dir.display()
                    )
                })?;
                Ok(Store::sqlite_url(&self.data_dir))
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for gRPC and HTTP together (4444 is the port Selenium users expect).
    #[arg(long, env = "FARM_LISTEN", default_value = "127.0.0.1:4444")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Lease length when a reservation does not ask for one, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub default_ttl_secs: u64,
    /// After a start, how long nodes have to reconnect before their devices are marked offline, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub reconnect_grace_secs: u64,
    /// Let users who do not hold a device's lease watch its screen (read-only). Admins always may.
    #[arg(long, env = "FARM_ALLOW_OBSERVERS")]
    pub allow_observers: bool,
    /// ICE servers per site, a JSON file:
    /// {"default": {"stun": ["stun:HOST:3478"], "turn": ["turn:HOST:3478?transport=udp"], "turn_secret": "S"},
    ///  "sites": {"paris": {...}}}. TURN credentials are minted per session (coturn --use-auth-secret).
    #[arg(long, env = "FARM_ICE_CONFIG")]
    pub ice_config: Option<PathBuf>,
    /// WebDriver: a session with no command for this long is deleted and its lease ends `idle`, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub webdriver_idle_secs: u64,
    /// WebDriver: how long a new-session request waits for a slot unless it sets farm:queueTimeout, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub webdriver_queue_secs: u64,
    /// WebDriver: how long a slot may take to answer one command (or create a session), in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub webdriver_response_secs: u64,
    /// WebDriver: the largest request body (e.g. an app upload) forwarded to a slot, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub webdriver_max_body_mib: u64,
    /// Threads that run the broker's async work [default: one per CPU]. The database has
    /// threads of its own.
    #[arg(long, env = "FARM_WORKER_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: Option<u16>,
}

impl ServeArgs {
    /// Live-session settings; reads and checks the ICE file.
    pub fn live_config(&self) -> anyhow::Result<LiveConfig> {
        let ice = match &self.ice_config {
            None => IceConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --ice-config {}: {e}", path.display())
                })?;
                IceConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
        };
        Ok(LiveConfig {
            ice,
            allow_observers: self.allow_observers,
            ..LiveConfig::default()
        })
    }

    pub fn grid_config(&self) -> GridConfig {
        GridConfig {
            idle_timeout: Duration::from_secs(self.webdriver_idle_secs),
            queue_timeout: Duration::from_secs(self.webdriver_queue_secs),
            response_timeout: Duration::from_secs(self.webdriver_response_secs),
            max_request_bytes: self.webdriver_max_body_mib * 1024 * 1024,
            ..GridConfig::default()
        }
    }

    pub fn fleet_config(&self) -> FleetConfig {
        FleetConfig {
            default_ttl: Duration::from_secs(self.default_ttl_secs),
            reconnect_grace: Duration::from_secs(self.reconnect_grace_secs),
            ..FleetConfig::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// admin: everything; user: devices and own leases; node: the node link only.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Who holds it; shown as the holder of its leases. Unique.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}: use admin, user or node"))
}
