//! Building one answering peer connection: the bind address and port range, no mDNS, the
//! DTLS server role, and an event handler that turns the driver's callbacks into messages
//! for the session task (callbacks run on the driver, so they only queue).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::Arc;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::transport::RTCDtlsRole;
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, SettingEngineBuilder,
};

use super::media::media_engine_and_interceptors;

/// Where peer connections bind and advertise their host candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    /// The address to bind and advertise (never a wildcard: a wildcard skips loopback).
    pub ip: IpAddr,
    /// The UDP ports to use (one per session); `None` for any ephemeral port.
    pub ports: Option<RangeInclusive<u16>>,
}

/// What the driver reports about one peer connection.
pub enum PeerEvent {
    LocalCandidate(RTCIceCandidateInit),
    GatheringComplete,
    State(RTCPeerConnectionState),
    DataChannel(Arc<dyn DataChannel>),
}

struct EventForwarder(mpsc::UnboundedSender<PeerEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for EventForwarder {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.0.send(PeerEvent::LocalCandidate(init));
            }
            Err(error) => tracing::debug!(%error, "skipping a local candidate we cannot encode"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(PeerEvent::State(state));
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn DataChannel>) {
        let _ = self.0.send(PeerEvent::DataChannel(data_channel));
    }
}

/// How many ports of a range are tried before giving up (each failed try costs a build).
const MAX_BUILD_ATTEMPTS: usize = 3;

/// Builds an answering peer connection bound to `address`, reporting to `events`.
pub async fn build_peer(
    address: &PeerAddress,
    ice_servers: Vec<RTCIceServer>,
    events: mpsc::UnboundedSender<PeerEvent>,
) -> Result<Arc<dyn PeerConnection>, String> {
    let handler: Arc<dyn PeerConnectionEventHandler> = Arc::new(EventForwarder(events));
    let mut last_error = String::from("no free UDP port in --webrtc-ports");
    for port in candidate_ports(address, MAX_BUILD_ATTEMPTS) {
        let (media_engine, registry) =
            media_engine_and_interceptors().map_err(|error| error.to_string())?;
        let setting_engine = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            // As DTLS server the handshake with Chromium takes ~10 ms instead of ~190 ms.
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .build();
        let configuration = RTCConfigurationBuilder::new()
            .with_ice_servers(ice_servers.clone())
            .build();
        let built = PeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting_engine)
            .with_handler(Arc::clone(&handler))
            .with_udp_addrs(vec![SocketAddr::new(address.ip, port)])
            .build()
            .await;
        match built {
            Ok(peer) => return Ok(Arc::new(peer)),
            Err(error) => last_error = format!("cannot open UDP {}:{port}: {error}", address.ip),
        }
    }
    Err(last_error)
}

/// Ports to try: 0 (ephemeral) without a range; otherwise up to `attempts` ports of the
/// range that were free a moment ago, starting at a random place so sessions spread out.
fn candidate_ports(address: &PeerAddress, attempts: usize) -> Vec<u16> {
    let Some(range) = &address.ports else {
        return vec![0];
    };
    let (start, end) = (*range.start(), *range.end());
    let len = usize::from(end.saturating_sub(start)) + 1;
    let offset = rand::random_range(0..len);
    (0..len)
        .map(|i| start.saturating_add(((offset + i) % len) as u16))
        .filter(|port| UdpSocket::bind(SocketAddr::new(address.ip, *port)).is_ok())
        .take(attempts)
        .collect()
}

/// The ICE servers of a `LiveStart` as the crate wants them (empty URLs dropped).
pub fn ice_servers(servers: &[farm_proto::v1::IceServer]) -> Vec<RTCIceServer> {
    servers
        .iter()
        .filter(|server| !server.urls.is_empty())
        .map(|server| RTCIceServer {
            urls: server.urls.clone(),
            username: server.username.clone(),
            credential: server.credential.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_range_and_skip_busy_ones() {
        let busy = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = busy.local_addr().expect("addr").port();
        let address = PeerAddress {
            ip: IpAddr::from([127, 0, 0, 1]),
            ports: Some(port..=port),
        };
        assert!(candidate_ports(&address, 3).is_empty());
        drop(busy);
        assert_eq!(candidate_ports(&address, 3), vec![port]);
        let any = PeerAddress {
            ports: None,
            ..address
        };
        assert_eq!(candidate_ports(&any, 3), vec![0]);
    }
}
