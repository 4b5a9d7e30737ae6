//! Each farmctl subcommand: flags to a request, one call to the broker, the answer to text for stdout.

use std::io::IsTerminal as _;

use farm_proto::v1::{
    DeviceFilter, DeviceState, GetDeviceRequest, Lease, ListDevicesRequest,
    ListReservationsRequest, ReleaseRequest, RenewRequest, ReserveRequest, Selector,
    reserve_request::Target,
};
use time::OffsetDateTime;

use crate::cli::{Cli, Command, DevicesArgs, ReservationsArgs, ReserveArgs, StateFilter};
use crate::client::Broker;
use crate::error::CliError;
use crate::{output, sessions, table};

/// Runs the command and returns what goes to stdout.
pub async fn run(cli: Cli) -> Result<String, CliError> {
    let mut broker = Broker::connect(&cli.broker, cli.token.as_deref()).await?;
    let json = cli.json;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    match cli.command {
        Command::Devices(args) => {
            let request = ListDevicesRequest {
                filter: Some(device_filter(&args)),
            };
            let devices = match broker.devices.list_devices(request).await {
                Ok(response) => response.into_inner().devices,
                Err(status) => return Err(broker.error(status)),
            };
            Ok(if json {
                output::devices_json(&devices)
            } else {
                table::devices_table(&devices)
            })
        }
        Command::Device { id } => {
            let device = match broker.devices.get_device(GetDeviceRequest { id }).await {
                Ok(response) => response.into_inner(),
                Err(status) => return Err(broker.error(status)),
            };
            Ok(if json {
                output::device_json(&device)
            } else {
                table::device_details(&device, now)
            })
        }
        Command::Reserve(args) => {
            if args.wait > 0 && !json && std::io::stderr().is_terminal() {
                eprintln!("waiting up to {}s for a device...", args.wait);
            }
            let lease = match broker.reservations.reserve(reserve_request(&args)).await {
                Ok(response) => response.into_inner(),
                Err(status) => return Err(broker.error(status)),
            };
            if args.quiet {
                return Ok(format!("{}\n", lease.lease_id));
            }
            Ok(one_lease(&lease, json, now))
        }
        Command::Renew { lease, ttl } => {
            let request = RenewRequest {
                lease_id: lease,
                ttl_seconds: ttl.unwrap_or(0),
            };
            match broker.reservations.renew(request).await {
                Ok(response) => Ok(one_lease(&response.into_inner(), json, now)),
                Err(status) => Err(broker.error(status)),
            }
        }
        Command::Release { lease } => {
            let request = ReleaseRequest { lease_id: lease };
            match broker.reservations.release(request).await {
                Ok(response) => Ok(one_lease(&response.into_inner(), json, now)),
                Err(status) => Err(broker.error(status)),
            }
        }
        Command::Reservations(args) => {
            let leases = match broker
                .reservations
                .list_reservations(reservations_request(&args))
                .await
            {
                Ok(response) => response.into_inner().leases,
                Err(status) => return Err(broker.error(status)),
            };
            Ok(if json {
                output::leases_json(&leases)
            } else {
                table::leases_table(&leases, now)
            })
        }
        Command::Sessions(args) => {
            let list = match broker
                .reservations
                .list_sessions(sessions::request(&args))
                .await
            {
                Ok(response) => response.into_inner().sessions,
                Err(status) => return Err(broker.error(status)),
            };
            Ok(if json {
                sessions::sessions_json(&list)
            } else {
                sessions::sessions_table(&list)
            })
        }
    }
}

fn one_lease(lease: &Lease, json: bool, now: i64) -> String {
    if json {
        output::lease_json(lease)
    } else {
        table::leases_table(std::slice::from_ref(lease), now)
    }
}

/// An absent flag is the empty filter, which the broker treats as "any".
pub fn device_filter(args: &DevicesArgs) -> DeviceFilter {
    DeviceFilter {
        site: args.site.clone().unwrap_or_default(),
        platform: args.platform.clone().unwrap_or_default(),
        state: args
            .state
            .map_or(DeviceState::Unspecified, wire_state)
            .into(),
        model: args.model.clone().unwrap_or_default(),
        tags: args.tags.clone(),
    }
}

fn wire_state(state: StateFilter) -> DeviceState {
    match state {
        StateFilter::Available => DeviceState::Available,
        StateFilter::Reserved => DeviceState::Reserved,
        StateFilter::Offline => DeviceState::Offline,
        StateFilter::Unauthorized => DeviceState::Unauthorized,
    }
}

/// `--device` reserves that device; otherwise the selector flags, all empty meaning any device.
pub fn reserve_request(args: &ReserveArgs) -> ReserveRequest {
    let target = match &args.device {
        Some(id) => Target::DeviceId(id.clone()),
        None => Target::Selector(Selector {
            site: args.site.clone().unwrap_or_default(),
            platform: args.platform.clone().unwrap_or_default(),
            model: args.model.clone().unwrap_or_default(),
            tags: args.tags.clone(),
        }),
    };
    ReserveRequest {
        target: Some(target),
        wait_seconds: args.wait,
        ttl_seconds: args.ttl.unwrap_or(0),
    }
}

pub fn reservations_request(args: &ReservationsArgs) -> ListReservationsRequest {
    ListReservationsRequest {
        include_ended: args.all,
        device_id: args.device.clone().unwrap_or_default(),
        holder: args.holder.clone().unwrap_or_default(),
        limit: args.limit.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Command {
        let mut argv = vec!["farmctl"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("valid command line")
            .command
    }

    #[test]
    fn device_flags_become_the_filter() {
        let Command::Devices(args) = parse(&[
            "devices", "--site", "lab", "--state", "offline", "--tag", "a", "--tag", "b",
        ]) else {
            panic!("parsed as devices");
        };
        let filter = device_filter(&args);
        assert_eq!(filter.site, "lab");
        assert_eq!(filter.state, DeviceState::Offline as i32);
        assert_eq!(filter.tags, ["a", "b"]);
        assert_eq!(filter.platform, "");
    }

    #[test]
    fn reserve_by_id_or_by_selector() {
        let Command::Reserve(args) = parse(&["reserve", "--device", "d1", "--wait", "30"]) else {
            panic!("parsed as reserve");
        };
        let request = reserve_request(&args);
        assert_eq!(request.target, Some(Target::DeviceId("d1".into())));
        assert_eq!((request.wait_seconds, request.ttl_seconds), (30, 0));

        let Command::Reserve(args) = parse(&["reserve", "--model", "Pixel 7", "--ttl", "60"])
        else {
            panic!("parsed as reserve");
        };
        let request = reserve_request(&args);
        let Some(Target::Selector(selector)) = request.target else {
            panic!("a selector");
        };
        assert_eq!(selector.model, "Pixel 7");
        assert_eq!(request.ttl_seconds, 60);
    }

    #[test]
    fn reserve_with_no_flags_sends_the_empty_selector() {
        let Command::Reserve(args) = parse(&["reserve"]) else {
            panic!("parsed as reserve");
        };
        assert_eq!(
            reserve_request(&args).target,
            Some(Target::Selector(Selector::default()))
        );
    }

    #[test]
    fn reservations_flags_become_the_request() {
        let Command::Reservations(args) =
            parse(&["reservations", "--all", "--holder", "ci", "--limit", "5"])
        else {
            panic!("parsed as reservations");
        };
        let request = reservations_request(&args);
        assert!(request.include_ended);
        assert_eq!((request.holder.as_str(), request.limit), ("ci", 5));
    }
}
