//! The browser side of the live-session tests: a webrtc-rs client that offers like
//! Chromium (several codecs, recvonly video, the `input` channel), and the relay that
//! trickles candidates between it and the node.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use farm_proto::v1::{
    IceCandidate, LiveSignal, NodeMessage, live_signal::Signal, node_message::Msg,
};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

pub const WAIT: Duration = Duration::from_secs(10);

pub fn live(session_id: &str, signal: Signal) -> LiveSignal {
    LiveSignal {
        session_id: session_id.into(),
        signal: Some(signal),
    }
}

/// What the browser-like client sees.
pub enum ClientEvent {
    Candidate(RTCIceCandidateInit),
    Track(Arc<dyn TrackRemote>),
}

struct ClientHandler(mpsc::UnboundedSender<ClientEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.0.send(ClientEvent::Candidate(init));
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.0.send(ClientEvent::Track(track));
    }
}

/// Payload types the client offers, like Chromium does: several codecs, several H.264s.
pub const CLIENT_VP8: u8 = 96;
pub const CLIENT_H264_42001F: u8 = 106;
pub const CLIENT_H264_42E01F: u8 = 108;
pub const CLIENT_H264_42E01F_MODE0: u8 = 109;

fn client_codec(mime: &str, fmtp: &str, payload_type: u8) -> RTCRtpCodecParameters {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: vec![
                feedback("goog-remb", ""),
                feedback("transport-cc", ""),
                feedback("ccm", "fir"),
                feedback("nack", ""),
                feedback("nack", "pli"),
            ],
        },
        payload_type,
    }
}

/// A receiving client with a recvonly video transceiver and (when `control`) the `input`
/// data channel, ready to offer.
pub async fn browser_client(
    control: bool,
) -> Result<(
    Arc<dyn PeerConnection>,
    Option<Arc<dyn DataChannel>>,
    mpsc::UnboundedReceiver<ClientEvent>,
)> {
    let mut media_engine = MediaEngine::default();
    for (mime, fmtp, pt) in [
        (MIME_TYPE_VP8, "", CLIENT_VP8),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            CLIENT_H264_42001F,
        ),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            CLIENT_H264_42E01F,
        ),
        (
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
            CLIENT_H264_42E01F_MODE0,
        ),
    ] {
        media_engine.register_codec(client_codec(mime, fmtp, pt), RtpCodecKind::Video)?;
    }
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: farm_node::live::media::PLAYOUT_DELAY_URI.into(),
        },
        RtpCodecKind::Video,
        None,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let peer = PeerConnectionBuilder::new()
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                .build(),
        )
        .with_handler(Arc::new(ClientHandler(events_tx)))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await?;
    let peer: Arc<dyn PeerConnection> = Arc::new(peer);
    peer.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
    .await?;
    let channel = if control {
        Some(peer.create_data_channel("input", None).await?)
    } else {
        None
    };
    Ok((peer, channel, events))
}

/// Reads a remote track: forwards each RTP packet to the returned receiver.
pub fn read_rtp(track: Arc<dyn TrackRemote>) -> mpsc::UnboundedReceiver<rtc::rtp::Packet> {
    let (packets_tx, packets) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(packet) = event
                && packets_tx.send(packet).is_err()
            {
                return;
            }
        }
    });
    packets
}

/// Reads a data channel: forwards each text message to the returned receiver.
pub fn read_channel(channel: Arc<dyn DataChannel>) -> mpsc::UnboundedReceiver<String> {
    let (messages_tx, messages) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = channel.poll().await {
            if let webrtc::data_channel::DataChannelEvent::OnMessage(message) = event {
                let text = String::from_utf8_lossy(&message.data).into_owned();
                if messages_tx.send(text).is_err() {
                    return;
                }
            }
        }
    });
    messages
}

/// The next live signal the node sends, within `within`.
pub async fn next_signal(
    outbound: &mut mpsc::Receiver<NodeMessage>,
    within: Duration,
) -> Result<(String, Signal)> {
    let message = tokio::time::timeout(within, outbound.recv())
        .await
        .context("no message from the node in time")?
        .context("the node's outbound channel closed")?;
    match message.msg {
        Some(Msg::Live(LiveSignal {
            session_id,
            signal: Some(signal),
        })) => Ok((session_id, signal)),
        other => bail!("not a live signal: {other:?}"),
    }
}

pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> Result<T> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .with_context(|| format!("timed out waiting for {what}"))?
        .with_context(|| format!("closed while waiting for {what}"))
}

/// The payload types of the answer's video m-line.
pub fn video_payload_types(sdp: &str) -> Vec<String> {
    sdp.lines()
        .find(|line| line.starts_with("m=video"))
        .map(|line| {
            line.split_whitespace()
                .skip(3)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Trickles candidates both ways and hands every other node signal to the test.
pub fn relay(
    mut outbound: mpsc::Receiver<NodeMessage>,
    client: Arc<dyn PeerConnection>,
    mut client_events: mpsc::UnboundedReceiver<ClientEvent>,
    signals: mpsc::Sender<LiveSignal>,
    session_id: &str,
) -> (
    mpsc::UnboundedReceiver<Signal>,
    mpsc::UnboundedReceiver<Arc<dyn webrtc::media_stream::track_remote::TrackRemote>>,
) {
    let (rest_tx, rest) = mpsc::unbounded_channel();
    let (tracks_tx, tracks) = mpsc::unbounded_channel();
    let node_client = Arc::clone(&client);
    tokio::spawn(async move {
        while let Ok((_, signal)) = next_signal(&mut outbound, Duration::from_secs(3600)).await {
            match signal {
                Signal::Candidate(c) if !c.candidate.is_empty() => {
                    let init = RTCIceCandidateInit {
                        candidate: c.candidate,
                        sdp_mid: Some(c.sdp_mid),
                        sdp_mline_index: Some(c.sdp_mline_index as u16),
                        ..Default::default()
                    };
                    let _ = node_client.add_ice_candidate(init).await;
                }
                other => {
                    let _ = rest_tx.send(other);
                }
            }
        }
    });
    let session_id = session_id.to_string();
    tokio::spawn(async move {
        while let Some(event) = client_events.recv().await {
            match event {
                ClientEvent::Candidate(init) => {
                    let candidate = Signal::Candidate(IceCandidate {
                        candidate: init.candidate,
                        sdp_mid: init.sdp_mid.unwrap_or_default(),
                        sdp_mline_index: u32::from(init.sdp_mline_index.unwrap_or(0)),
                    });
                    let _ = signals.send(live(&session_id, candidate)).await;
                }
                ClientEvent::Track(track) => {
                    let _ = tracks_tx.send(track);
                }
            }
        }
    });
    (rest, tracks)
}

/// Offers from the client, sends the offer to the node, applies the answer it gets back.
pub async fn negotiate(
    client: &Arc<dyn PeerConnection>,
    signals: &mpsc::Sender<LiveSignal>,
    rest: &mut mpsc::UnboundedReceiver<Signal>,
    session_id: &str,
) -> Result<String> {
    let offer = client.create_offer(None).await?;
    client.set_local_description(offer.clone()).await?;
    signals
        .send(live(session_id, Signal::OfferSdp(offer.sdp)))
        .await?;
    let answer = loop {
        match recv(rest, "the answer").await? {
            Signal::AnswerSdp(sdp) => break sdp,
            Signal::Candidate(_) | Signal::VideoSize(_) => continue,
            other => bail!("expected an answer, got {other:?}"),
        }
    };
    client
        .set_remote_description(RTCSessionDescription::answer(answer.clone())?)
        .await?;
    Ok(answer)
}

/// Receives RTP until `frames` frames (RTP timestamps) came; checks the payload type, the
/// playout-delay extension and that timestamps follow the 30 fps PTS. Returns the SSRC.
pub async fn expect_video(
    packets: &mut mpsc::UnboundedReceiver<rtc::rtp::Packet>,
    frames: usize,
) -> Result<u32> {
    let mut timestamps = Vec::new();
    let mut ssrc = 0;
    let mut playout_delay = false;
    while timestamps.len() < frames {
        let packet = recv(packets, "RTP packets").await?;
        ensure!(
            packet.header.payload_type == CLIENT_H264_42E01F,
            "payload type {}",
            packet.header.payload_type
        );
        ssrc = packet.header.ssrc;
        playout_delay |= packet
            .header
            .extensions
            .iter()
            .any(|e| e.payload.as_ref() == [0, 0, 0]);
        if timestamps.last() != Some(&packet.header.timestamp) {
            timestamps.push(packet.header.timestamp);
        }
    }
    ensure!(
        playout_delay,
        "no playout-delay 0/0 extension on the packets"
    );
    for pair in timestamps.windows(2) {
        // Frames are 33 333 µs apart: 2999 or 3000 ticks (a multiple if frames were skipped).
        let delta = pair[1].wrapping_sub(pair[0]);
        let frames = (delta + 1500) / 3000;
        ensure!(
            frames >= 1 && delta.abs_diff(frames * 3000) <= frames,
            "RTP timestamps not from PTS: {timestamps:?}"
        );
    }
    Ok(ssrc)
}
