//! One live session, owned by one task: a viewer of the device, an answering peer
//! connection with the H.264 track, the `input` data channel, and the signalling with the
//! broker (answer, trickled candidates, video size, end).
//!
//! Helper tasks (frame pump, keyframe-request reader, data channel readers, input worker)
//! only report to this task through [`SessionEvent`]s; they stop when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_proto::v1::{
    IceCandidate, LiveEnd, LiveSignal, LiveStart, NodeMessage, live_signal::Signal,
    node_message::Msg,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelMessage};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription,
};

use super::input::{InputAction, NodeToBrowser, parse_input};
use super::media::{TrackTarget, h264_codec, pump_frames};
use super::peer::{PeerAddress, PeerEvent, build_peer, ice_servers};
use super::source::{DeviceLookup, LiveSource, LiveViewer};
use super::state::{NegotiationTimer, SessionCommand, first_mid};
use crate::capture::ControlMessage;

/// The label of the browser's input channel.
pub const INPUT_CHANNEL_LABEL: &str = "input";
/// What the broker hears when the device's capture ends.
pub const DEVICE_DISCONNECTED: &str = "device disconnected";
/// What the broker hears when the browser never completes (or recovers) the connection.
pub const NEGOTIATION_TIMED_OUT: &str = "negotiation timed out";
const EVENT_QUEUE: usize = 256;
const INPUT_QUEUE: usize = 256;

/// What every session shares.
pub struct SessionContext {
    pub address: PeerAddress,
    pub negotiation_timeout: Duration,
    pub capture: Arc<dyn LiveSource>,
    pub devices: Arc<dyn DeviceLookup>,
    /// Messages to the broker.
    pub outbound: mpsc::Sender<NodeMessage>,
}

/// Reports from a session's helper tasks.
pub enum SessionEvent {
    KeyframeWanted,
    CaptureEnded,
    ChannelOpen(usize),
    ChannelMessage(usize, RTCDataChannelMessage),
}

/// Runs one session until it ends. Ends silently when `commands` closes (the broker ended
/// it, the broker connection changed, or the node stops); otherwise tells the broker why.
pub async fn run_session(
    context: Arc<SessionContext>,
    session_id: String,
    start: LiveStart,
    commands: mpsc::Receiver<SessionCommand>,
) {
    let outbound = Outbound {
        session_id,
        sender: context.outbound.clone(),
    };
    match Session::open(&context, &start, &outbound).await {
        Ok(mut session) => {
            let reason = session.run(commands).await;
            // Tell the broker first: closing the peer may take a moment.
            end(&outbound, reason);
            let _ = session.peer.close().await;
        }
        Err(reason) => end(&outbound, Some(reason)),
    }
}

fn end(outbound: &Outbound, reason: Option<String>) {
    match reason {
        Some(reason) => {
            tracing::info!(%reason, "live session ended");
            outbound.send(Signal::End(LiveEnd { reason }));
        }
        None => tracing::info!("live session closed"),
    }
}

struct Outbound {
    session_id: String,
    sender: mpsc::Sender<NodeMessage>,
}

impl Outbound {
    fn send(&self, signal: Signal) {
        let message = NodeMessage {
            msg: Some(Msg::Live(LiveSignal {
                session_id: self.session_id.clone(),
                signal: Some(signal),
            })),
        };
        // Never wait on the link: a stuck link reconnects, and that ends this session anyway.
        if self.sender.try_send(message).is_err() {
            tracing::warn!("broker link queue full or closed; dropped a live signal");
        }
    }
}

struct Session<'a> {
    outbound: &'a Outbound,
    control: bool,
    peer: Arc<dyn PeerConnection>,
    viewer: Arc<dyn LiveViewer>,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    track_added: bool,
    target: watch::Sender<Option<TrackTarget>>,
    size: watch::Receiver<crate::capture::VideoSize>,
    peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    events: mpsc::Receiver<SessionEvent>,
    events_tx: mpsc::Sender<SessionEvent>,
    input: mpsc::Sender<(ControlMessage, Arc<dyn DataChannel>)>,
    channels: Vec<Arc<dyn DataChannel>>,
    /// The mid our candidates belong to (the first m-line of the offer; bundled).
    mid: String,
    have_remote: bool,
    early_candidates: Vec<RTCIceCandidateInit>,
    timer: NegotiationTimer,
    /// Aborted when the session ends (dropping a `JoinSet` aborts its tasks).
    tasks: JoinSet<()>,
}

impl<'a> Session<'a> {
    async fn open(
        context: &SessionContext,
        start: &LiveStart,
        outbound: &'a Outbound,
    ) -> Result<Session<'a>, String> {
        let serial = start.device_serial.as_str();
        context.devices.check(serial).await?;
        let mut viewer = context.capture.attach(serial).await?;
        let frames = viewer.take_frames();
        let viewer: Arc<dyn LiveViewer> = Arc::from(viewer);
        let (peer_events_tx, peer_events) = mpsc::unbounded_channel();
        let peer = build_peer(
            &context.address,
            ice_servers(&start.ice_servers),
            peer_events_tx,
        )
        .await
        .map_err(|error| format!("the node cannot set up WebRTC: {error}"))?;
        let ssrc = rand::random::<u32>();
        // Fixed ids: a serial may hold characters SDP tokens do not allow (`host:port`).
        let track = MediaStreamTrack::new(
            "device".to_string(),
            "screen".to_string(),
            "screen".to_string(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: h264_codec(),
                ..Default::default()
            }],
        );
        let track = TrackLocalStaticSample::new(Instant::now(), track)
            .map_err(|error| format!("the node cannot set up the video track: {error}"))?;

        let mut tasks = JoinSet::new();
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (target, target_rx) = watch::channel(None);
        tasks.spawn(pump_frames(frames, target_rx, events_tx.clone()));
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        tasks.spawn(input_worker(Arc::clone(&viewer), input_rx));

        let size = viewer.video_size();
        let current = *size.borrow();
        if current.width > 0 && current.height > 0 {
            outbound.send(Signal::VideoSize(wire_size(current)));
        }
        Ok(Session {
            outbound,
            control: start.control,
            peer,
            viewer,
            track: Arc::new(track),
            ssrc,
            track_added: false,
            target,
            size,
            peer_events,
            events,
            events_tx,
            input,
            channels: Vec::new(),
            mid: "0".to_string(),
            have_remote: false,
            early_candidates: Vec::new(),
            timer: NegotiationTimer::started(context.negotiation_timeout, Instant::now()),
            tasks,
        })
    }

    /// The session loop; `Some(reason)` when the node ends the session.
    async fn run(&mut self, mut commands: mpsc::Receiver<SessionCommand>) -> Option<String> {
        let mut size_open = true;
        loop {
            let deadline = self.timer.deadline();
            let timeout = async move {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    None => return None,
                    Some(command) => {
                        if let Err(reason) = self.on_command(command).await {
                            return Some(reason);
                        }
                    }
                },
                Some(event) = self.peer_events.recv() => {
                    if let Some(reason) = self.on_peer_event(event).await {
                        return Some(reason);
                    }
                }
                Some(event) = self.events.recv() => {
                    if let Some(reason) = self.on_event(event).await {
                        return Some(reason);
                    }
                }
                changed = self.size.changed(), if size_open => {
                    if changed.is_err() {
                        size_open = false;
                    } else {
                        let size = *self.size.borrow_and_update();
                        self.outbound.send(Signal::VideoSize(wire_size(size)));
                        self.send_to_channels(&NodeToBrowser::Size { width: size.width, height: size.height }).await;
                    }
                }
                () = timeout => {
                    if self.timer.expired(Instant::now()) {
                        return Some(NEGOTIATION_TIMED_OUT.to_string());
                    }
                }
            }
        }
    }

    async fn on_command(&mut self, command: SessionCommand) -> Result<(), String> {
        match command {
            SessionCommand::Offer(sdp) => self.answer(sdp).await,
            SessionCommand::IceRestart => {
                tracing::info!("the browser restarts ICE");
                Ok(())
            }
            SessionCommand::Candidate(candidate) => {
                if candidate.candidate.is_empty() {
                    tracing::debug!("the browser has no more candidates");
                    return Ok(());
                }
                let init = RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: Some(candidate.sdp_mid).filter(|mid| !mid.is_empty()),
                    sdp_mline_index: u16::try_from(candidate.sdp_mline_index).ok(),
                    ..Default::default()
                };
                if self.have_remote {
                    if let Err(error) = self.peer.add_ice_candidate(init).await {
                        tracing::debug!(%error, "ignored a remote candidate");
                    }
                } else if self.early_candidates.len() < 64 {
                    self.early_candidates.push(init);
                }
                Ok(())
            }
        }
    }

    /// Answers an offer (the first one, or a renegotiation such as an ICE restart).
    async fn answer(&mut self, sdp: String) -> Result<(), String> {
        let mid = first_mid(&sdp);
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|error| format!("the browser's offer is not valid SDP: {error}"))?;
        self.peer
            .set_remote_description(offer)
            .await
            .map_err(|error| format!("cannot use the browser's offer: {error}"))?;
        self.have_remote = true;
        if let Some(mid) = mid {
            self.mid = mid;
        }
        if !self.track_added {
            // After set_remote_description, so the track takes the offer's extension ids.
            self.add_track().await?;
        }
        let answer = self
            .peer
            .create_answer(None)
            .await
            .map_err(|error| format!("cannot answer the browser's offer: {error}"))?;
        let sdp = answer.sdp.clone();
        self.peer
            .set_local_description(answer)
            .await
            .map_err(|error| format!("cannot apply our answer: {error}"))?;
        // The applied description carries the candidates gathered so far: after an ICE
        // restart (which keeps them) that is how the browser learns them again.
        let sdp = match self.peer.local_description().await {
            Some(local) => local.sdp,
            None => sdp,
        };
        self.outbound.send(Signal::AnswerSdp(sdp));
        for candidate in std::mem::take(&mut self.early_candidates) {
            if let Err(error) = self.peer.add_ice_candidate(candidate).await {
                tracing::debug!(%error, "ignored an early remote candidate");
            }
        }
        Ok(())
    }

    async fn add_track(&mut self) -> Result<(), String> {
        let sender = self
            .peer
            .add_track(Arc::clone(&self.track) as Arc<dyn TrackLocal>)
            .await
            .map_err(|error| format!("cannot add the video track: {error}"))?;
        self.track_added = true;
        let payload_type = sender
            .get_parameters()
            .await
            .ok()
            .and_then(|parameters| parameters.rtp_parameters.codecs.first().map(|c| c.payload_type))
            .ok_or("the browser offered no H.264 video we can send (Constrained Baseline, profile-level-id 42e01f, packetization-mode 1)")?;
        self.target.send_replace(Some(TrackTarget {
            track: Arc::clone(&self.track),
            ssrc: self.ssrc,
            payload_type,
        }));
        let track = Arc::clone(&self.track);
        let events = self.events_tx.clone();
        self.tasks.spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(_) = event {
                    let _ = events.try_send(SessionEvent::KeyframeWanted);
                }
            }
        });
        Ok(())
    }

    async fn on_peer_event(&mut self, event: PeerEvent) -> Option<String> {
        match event {
            PeerEvent::LocalCandidate(init) => {
                self.outbound.send(Signal::Candidate(IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: self.mid.clone(),
                    sdp_mline_index: 0,
                }));
            }
            PeerEvent::GatheringComplete => {
                // End of candidates, as the browser writes it: an empty candidate.
                self.outbound.send(Signal::Candidate(IceCandidate {
                    candidate: String::new(),
                    sdp_mid: self.mid.clone(),
                    sdp_mline_index: 0,
                }));
            }
            PeerEvent::State(state) => {
                tracing::debug!(%state, "peer connection state");
                self.timer.on_state(state, Instant::now());
                if state == RTCPeerConnectionState::Closed {
                    return Some("the connection to the browser closed".into());
                }
                // A phone sends frames only when its screen changes: the keyframe sent
                // while the viewer was still connecting may be gone, so ask for a fresh
                // one now that media can flow (rate-limited by the capture).
                if state == RTCPeerConnectionState::Connected {
                    self.viewer.viewer_ready();
                }
            }
            PeerEvent::DataChannel(channel) => {
                let label = channel.label().await.unwrap_or_default();
                if label != INPUT_CHANNEL_LABEL {
                    tracing::debug!(%label, "closing an unexpected data channel");
                    let _ = channel.close().await;
                    return None;
                }
                let index = self.channels.len();
                self.channels.push(Arc::clone(&channel));
                self.tasks
                    .spawn(read_channel(index, channel, self.events_tx.clone()));
                // The open event came before the handler saw the channel: say the size now.
                self.on_event(SessionEvent::ChannelOpen(index)).await;
            }
        }
        None
    }

    async fn on_event(&mut self, event: SessionEvent) -> Option<String> {
        match event {
            SessionEvent::KeyframeWanted => self.viewer.request_keyframe(),
            SessionEvent::CaptureEnded => return Some(DEVICE_DISCONNECTED.to_string()),
            SessionEvent::ChannelOpen(index) => {
                let size = *self.size.borrow();
                if size.width > 0
                    && let Some(channel) = self.channels.get(index)
                {
                    let message = NodeToBrowser::Size {
                        width: size.width,
                        height: size.height,
                    };
                    let _ = channel.send_text(&message.to_json()).await;
                }
            }
            SessionEvent::ChannelMessage(index, message) => {
                let channel = self.channels.get(index).cloned()?;
                let size = *self.size.borrow();
                let reply = match parse_input(&message.data, message.is_string, size, self.control)
                {
                    Ok(InputAction::Control(control)) => {
                        match self.input.try_send((control, Arc::clone(&channel))) {
                            Ok(()) => None,
                            Err(_) => Some(NodeToBrowser::Error {
                                message: "too much input queued; slow down".into(),
                            }),
                        }
                    }
                    Ok(InputAction::Pong(t)) => Some(NodeToBrowser::Pong { t }),
                    Err(error) => Some(NodeToBrowser::Error {
                        message: error.to_string(),
                    }),
                };
                if let Some(reply) = reply {
                    let _ = channel.send_text(&reply.to_json()).await;
                }
            }
        }
        None
    }

    async fn send_to_channels(&self, message: &NodeToBrowser) {
        let text = message.to_json();
        for channel in &self.channels {
            let _ = channel.send_text(&text).await;
        }
    }
}

/// Forwards one data channel's opening and messages to the session.
async fn read_channel(
    index: usize,
    channel: Arc<dyn DataChannel>,
    events: mpsc::Sender<SessionEvent>,
) {
    while let Some(event) = channel.poll().await {
        let forward = match event {
            // Already announced when the channel was handed over.
            DataChannelEvent::OnOpen => continue,
            DataChannelEvent::OnMessage(message) => SessionEvent::ChannelMessage(index, message),
            DataChannelEvent::OnClose => return,
            _ => continue,
        };
        if events.send(forward).await.is_err() {
            return;
        }
    }
}

/// Injects input in order, one message at a time, so a slow device never stalls the session.
async fn input_worker(
    viewer: Arc<dyn LiveViewer>,
    mut input: mpsc::Receiver<(ControlMessage, Arc<dyn DataChannel>)>,
) {
    while let Some((message, channel)) = input.recv().await {
        if let Err(error) = viewer.control(message).await {
            let reply = NodeToBrowser::Error {
                message: format!("input failed: {error}"),
            };
            let _ = channel.send_text(&reply.to_json()).await;
        }
    }
}

fn wire_size(size: crate::capture::VideoSize) -> farm_proto::v1::VideoSize {
    farm_proto::v1::VideoSize {
        width: size.width,
        height: size.height,
    }
}
