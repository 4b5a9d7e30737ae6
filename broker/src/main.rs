//! `farm-broker`: serve the broker, or create tokens against its database.

use clap::Parser;
use farm_broker::auth::Authenticator;
use farm_broker::config::{Cli, Command, TokenCommand};
use farm_broker::domain::now_millis;
use farm_broker::store::Store;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match &cli.command {
        Command::Serve(args) => {
            if let Some(n) = args.worker_threads {
                builder.worker_threads(usize::from(n));
            }
        }
        Command::Token(_) => {
            builder.worker_threads(1);
        }
    }
    let runtime = builder.enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    if let Err(e) = result {
        eprintln!("farm-broker: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let url = args.storage.url()?;
            let live = args.live_config()?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
            let configs = (args.fleet_config(), live, args.grid_config());
            farm_broker::app::serve_with(listener, &url, configs, shutdown_signal()).await?;
            Ok(())
        }
        Command::Token(TokenCommand::Create {
            role,
            name,
            storage,
        }) => {
            let store = Store::open(&storage.url()?).await?;
            let token = Authenticator::create(&store, role, &name, now_millis()).await?;
            store.close().await;
            println!("{token}");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
