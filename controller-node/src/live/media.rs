//! The video side of a live session: the H.264 codec and extensions we negotiate, the
//! interceptor that surfaces keyframe requests, RTP timestamps from device PTS, and the
//! task that packetizes the device's frames (no transcoding).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::media::Sample;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MediaEngine};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::{broadcast, mpsc, watch};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;

use super::session::SessionEvent;
use crate::capture::VideoFrame;

/// The only video format we answer: Constrained Baseline 3.1, non-interleaved packetization.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// The payload type we register; an answer reuses the offer's own number for the codec.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// Asks the browser to render frames as soon as they are decoded.
pub const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
/// RTP video clock rate.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Slot of the keyframe-request interceptor: after every built-in one.
const KEYFRAME_FORWARDER_SLOT: usize = 14_000;

/// The H.264 codec as tracks and the media engine describe it.
pub fn h264_codec() -> RTCRtpCodec {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_string(),
        parameter: parameter.to_string(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_string(),
        clock_rate: VIDEO_CLOCK_RATE,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_string(),
        rtcp_feedback: vec![
            feedback("nack", ""),
            feedback("nack", "pli"),
            feedback("ccm", "fir"),
            feedback("goog-remb", ""),
        ],
    }
}

/// A media engine that knows H.264 42e01f only (so an answer to a browser offering many
/// codecs keeps just that one) plus the playout-delay extension, and its interceptors:
/// the defaults (NACK, reports, TWCC) and the keyframe-request forwarder last.
pub fn media_engine_and_interceptors() -> Result<(MediaEngine, Registry), webrtc::error::Error> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: h264_codec(),
            payload_type: H264_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: PLAYOUT_DELAY_URI.to_string(),
        },
        RtpCodecKind::Video,
        None,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    let registry = registry.with(
        Slot::from(KEYFRAME_FORWARDER_SLOT),
        KeyframeRequestForwarder::default(),
    );
    Ok((media_engine, registry))
}

/// Passes inbound PLI and FIR on to the application (they then arrive from the track's
/// `poll()`); every other inbound RTCP stops here, the interceptors before it used it already.
#[derive(Default)]
pub struct KeyframeRequestForwarder {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let packet = packet.as_any();
    packet.is::<PictureLossIndication>() || packet.is::<FullIntraRequest>()
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = webrtc::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|packet| is_keyframe_request(packet.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            message.message.packet = Packet::Rtcp(requests);
            message.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// RTP timestamps from device PTS (µs × 0.09), kept strictly increasing.
///
/// The packetizer stamps a sample with its running timestamp and then adds the sample's
/// duration; so before each frame we advance it by the PTS gap (an empty sample carries
/// the gap and sends nothing) and the frame itself lasts 0.
#[derive(Debug, Default, Clone)]
pub struct RtpClock {
    last_ticks: Option<u64>,
}

impl RtpClock {
    /// How many 90 kHz ticks to advance before sending the frame with `pts_us`.
    pub fn advance(&mut self, pts_us: u64) -> u32 {
        let ticks = pts_us.saturating_mul(9) / 100;
        let gap = match self.last_ticks {
            None => 0,
            Some(last) if ticks > last => ticks - last,
            // A PTS that goes back (capture restarted): keep the RTP time moving forward.
            Some(_) => 1,
        };
        self.last_ticks = Some(ticks);
        // Half the u32 range keeps the receiver's wrap-around arithmetic unambiguous.
        gap.min(u64::from(u32::MAX / 2)) as u32
    }
}

/// A duration the packetizer turns back into exactly `ticks` (it truncates
/// `secs × 90000`): half a tick more than the exact value absorbs float rounding.
pub fn ticks_to_duration(ticks: u32) -> Duration {
    let nanos = u64::from(ticks) * 100_000 / 9 + 5_555;
    Duration::from_nanos(nanos)
}

/// Where the pump writes once the session is negotiated.
#[derive(Clone)]
pub struct TrackTarget {
    pub track: Arc<TrackLocalStaticSample>,
    pub ssrc: u32,
    pub payload_type: u8,
}

/// Reads the device's frames for one session and writes them to its track once it is
/// negotiated; starts (and resyncs after lagging) at a keyframe. Returns when the capture
/// ends, after telling the session.
pub async fn pump_frames(
    mut frames: broadcast::Receiver<Arc<VideoFrame>>,
    mut target: watch::Receiver<Option<TrackTarget>>,
    events: mpsc::Sender<SessionEvent>,
) {
    let mut clock = RtpClock::default();
    let mut need_keyframe = true;
    let mut target_open = true;
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    let Some(out) = target.borrow().clone() else { continue };
                    if need_keyframe && !frame.keyframe {
                        continue;
                    }
                    need_keyframe = false;
                    let gap = clock.advance(frame.pts_us);
                    if let Err(error) = write_frame(&out, &frame, gap).await {
                        tracing::debug!(%error, "could not write a frame to the track");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "viewer lagged; waiting for a keyframe");
                    need_keyframe = true;
                    let _ = events.try_send(SessionEvent::KeyframeWanted);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = events.send(SessionEvent::CaptureEnded).await;
                    return;
                }
            },
            changed = target.changed(), if target_open => {
                if changed.is_err() {
                    target_open = false;
                } else if target.borrow_and_update().is_some() {
                    // A new viewer decodes nothing before a keyframe.
                    need_keyframe = true;
                    let _ = events.try_send(SessionEvent::KeyframeWanted);
                }
            }
        }
    }
}

async fn write_frame(
    out: &TrackTarget,
    frame: &VideoFrame,
    gap: u32,
) -> Result<(), webrtc::error::Error> {
    let now = Instant::now();
    if gap > 0 {
        let advance = Sample {
            duration: ticks_to_duration(gap),
            ..Sample::new(now)
        };
        out.track
            .write_sample(out.ssrc, out.payload_type, &advance, &[])
            .await?;
    }
    let sample = Sample {
        data: frame.data.clone(),
        duration: Duration::ZERO,
        ..Sample::new(now)
    };
    out.track
        .sample_writer(out.ssrc, out.payload_type)
        .with_extension(playout_delay())
        .write_sample(&sample)
        .await
}

/// Render as soon as decoded: min = max = 0 (`HeaderExtension` is not `Clone`, so made per frame).
fn playout_delay() -> HeaderExtension {
    HeaderExtension::PlayoutDelay(PlayoutDelayExtension {
        min_delay: 0,
        max_delay: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_time_follows_pts() {
        let mut clock = RtpClock::default();
        assert_eq!(
            clock.advance(1_000_000),
            0,
            "the first frame starts the clock"
        );
        assert_eq!(clock.advance(1_033_333), 2_999);
        // A static screen: the next frame comes 5 s later, and RTP time says so.
        assert_eq!(clock.advance(6_033_333), 450_000);
        // Backwards (a restarted capture) still moves forward.
        assert_eq!(clock.advance(10), 1);
        assert_eq!(clock.advance(100_010), 9_000);
        assert_eq!(clock.advance(u64::MAX), u32::MAX / 2);
    }

    #[test]
    fn durations_round_trip_through_the_packetizer_arithmetic() {
        for ticks in [
            0u32,
            1,
            8,
            9,
            10,
            2_999,
            3_000,
            3_003,
            90_000,
            450_001,
            u32::MAX / 2,
        ] {
            let duration = ticks_to_duration(ticks);
            let back = (duration.as_secs_f64() * f64::from(VIDEO_CLOCK_RATE)) as u32;
            assert_eq!(back, ticks, "{ticks} ticks");
        }
    }

    #[test]
    fn the_codec_is_constrained_baseline_with_feedback() {
        let codec = h264_codec();
        assert!(codec.sdp_fmtp_line.contains("packetization-mode=1"));
        assert!(codec.sdp_fmtp_line.contains("profile-level-id=42e01f"));
        let feedback: Vec<String> = codec
            .rtcp_feedback
            .iter()
            .map(|f| format!("{} {}", f.typ, f.parameter).trim().to_string())
            .collect();
        assert_eq!(feedback, ["nack", "nack pli", "ccm fir", "goog-remb"]);
        assert!(media_engine_and_interceptors().is_ok());
    }
}
