//! Pure session logic (no IO, no clock): where a broker `LiveSignal` goes, when a session
//! that never (re)connected must end, and which m-line our candidates belong to.

use std::time::{Duration, Instant};

use farm_proto::v1::{IceCandidate, LiveSignal, live_signal::Signal};
use webrtc::peer_connection::RTCPeerConnectionState;

/// What a session task is told by the manager.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Offer(String),
    /// The next offer restarts ICE (informational: the new credentials in the offer do it).
    IceRestart,
    Candidate(IceCandidate),
}

/// What the manager does with one broker signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Start a session.
    Start(farm_proto::v1::LiveStart),
    /// Hand it to the running session.
    Forward(SessionCommand),
    /// The broker ends the session: close it without answering.
    End,
    /// Answer `end` with this reason (no session, or no room for one).
    Refuse(String),
    /// Nothing to do (logged at debug).
    Ignore(&'static str),
}

/// Routes one broker signal, given whether its session runs and how many run.
pub fn route(signal: LiveSignal, known: bool, running: usize, max_sessions: usize) -> Route {
    if signal.session_id.is_empty() {
        return Route::Ignore("a live signal without a session id");
    }
    match signal.signal {
        Some(Signal::Start(start)) => {
            if known {
                Route::Ignore("a second start for a running session")
            } else if running >= max_sessions {
                Route::Refuse(format!(
                    "this node already runs {running} live sessions (the most it allows)"
                ))
            } else if start.device_serial.is_empty() {
                Route::Refuse("no device serial in the live session start".into())
            } else {
                Route::Start(start)
            }
        }
        Some(Signal::OfferSdp(sdp)) if known => Route::Forward(SessionCommand::Offer(sdp)),
        Some(Signal::OfferSdp(_)) => Route::Refuse("no such live session on this node".into()),
        Some(Signal::IceRestart(true)) if known => Route::Forward(SessionCommand::IceRestart),
        Some(Signal::Candidate(candidate)) if known => {
            Route::Forward(SessionCommand::Candidate(candidate))
        }
        Some(Signal::End(_)) if known => Route::End,
        Some(Signal::IceRestart(_) | Signal::Candidate(_) | Signal::End(_)) => {
            Route::Ignore("a signal for a session that is not running")
        }
        Some(Signal::AnswerSdp(_) | Signal::VideoSize(_)) => {
            Route::Ignore("a node-to-broker signal sent by the broker")
        }
        None => Route::Ignore("an empty live signal"),
    }
}

/// When a session must give up on negotiation: `timeout` after the start, and again after
/// the connection is lost (the browser may recover with an ICE restart meanwhile).
#[derive(Debug, Clone)]
pub struct NegotiationTimer {
    timeout: Duration,
    deadline: Option<Instant>,
}

impl NegotiationTimer {
    /// A timer armed at `now` (the session starts negotiating).
    pub fn started(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            deadline: Some(now + timeout),
        }
    }

    /// Follows the peer connection state.
    pub fn on_state(&mut self, state: RTCPeerConnectionState, now: Instant) {
        match state {
            RTCPeerConnectionState::Connected => self.deadline = None,
            RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed => {
                self.deadline.get_or_insert(now + self.timeout);
            }
            _ => {}
        }
    }

    /// When the session ends unless it connects first.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }
}

/// The mid of the first m-line of an SDP (what bundled candidates belong to).
pub fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("a=mid:"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use farm_proto::v1::{LiveEnd, LiveStart, VideoSize};

    fn signal(id: &str, signal: Signal) -> LiveSignal {
        LiveSignal {
            session_id: id.into(),
            signal: Some(signal),
        }
    }

    fn start() -> Signal {
        Signal::Start(LiveStart {
            device_serial: "emulator-5554".into(),
            control: true,
            ..Default::default()
        })
    }

    #[test]
    fn starts_are_refused_when_full_duplicated_or_without_a_device() {
        assert!(matches!(
            route(signal("s", start()), false, 0, 4),
            Route::Start(_)
        ));
        assert!(matches!(
            route(signal("s", start()), true, 1, 4),
            Route::Ignore(_)
        ));
        assert!(
            matches!(route(signal("s", start()), false, 4, 4), Route::Refuse(reason) if reason.contains("4 live sessions"))
        );
        let no_serial = Signal::Start(LiveStart::default());
        assert!(matches!(
            route(signal("s", no_serial), false, 0, 4),
            Route::Refuse(_)
        ));
        assert!(matches!(
            route(signal("", start()), false, 0, 4),
            Route::Ignore(_)
        ));
    }

    #[test]
    fn signals_for_running_sessions_are_forwarded() {
        assert_eq!(
            route(signal("s", Signal::OfferSdp("v=0".into())), true, 1, 4),
            Route::Forward(SessionCommand::Offer("v=0".into()))
        );
        assert_eq!(
            route(signal("s", Signal::IceRestart(true)), true, 1, 4),
            Route::Forward(SessionCommand::IceRestart)
        );
        let candidate = IceCandidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            sdp_mid: "0".into(),
            sdp_mline_index: 0,
        };
        assert_eq!(
            route(
                signal("s", Signal::Candidate(candidate.clone())),
                true,
                1,
                4
            ),
            Route::Forward(SessionCommand::Candidate(candidate))
        );
        let end = Signal::End(LiveEnd {
            reason: "viewer left".into(),
        });
        assert_eq!(route(signal("s", end), true, 1, 4), Route::End);
    }

    #[test]
    fn signals_for_unknown_sessions_and_wrong_directions_do_not_start_anything() {
        assert!(matches!(
            route(signal("x", Signal::OfferSdp("v=0".into())), false, 0, 4),
            Route::Refuse(_)
        ));
        for s in [
            Signal::IceRestart(true),
            Signal::Candidate(IceCandidate::default()),
            Signal::End(LiveEnd::default()),
        ] {
            assert!(matches!(
                route(signal("x", s), false, 0, 4),
                Route::Ignore(_)
            ));
        }
        for s in [
            Signal::AnswerSdp("v=0".into()),
            Signal::VideoSize(VideoSize::default()),
        ] {
            assert!(matches!(
                route(signal("s", s), true, 1, 4),
                Route::Ignore(_)
            ));
        }
        let empty = LiveSignal {
            session_id: "s".into(),
            signal: None,
        };
        assert!(matches!(route(empty, true, 1, 4), Route::Ignore(_)));
    }

    #[test]
    fn negotiation_must_finish_in_time_and_recover_in_time() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(15);
        let mut timer = NegotiationTimer::started(timeout, t0);
        assert!(!timer.expired(t0 + Duration::from_secs(14)));
        assert!(timer.expired(t0 + timeout));
        timer.on_state(RTCPeerConnectionState::Connecting, t0);
        assert_eq!(timer.deadline(), Some(t0 + timeout));
        timer.on_state(
            RTCPeerConnectionState::Connected,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(timer.deadline(), None);
        assert!(!timer.expired(t0 + Duration::from_secs(3600)));
        // Lost: 15 s to recover (an ICE restart), counted from the first loss.
        let lost = t0 + Duration::from_secs(100);
        timer.on_state(RTCPeerConnectionState::Disconnected, lost);
        timer.on_state(
            RTCPeerConnectionState::Failed,
            lost + Duration::from_secs(5),
        );
        assert_eq!(timer.deadline(), Some(lost + timeout));
        timer.on_state(
            RTCPeerConnectionState::Connected,
            lost + Duration::from_secs(6),
        );
        assert!(!timer.expired(lost + timeout));
    }

    #[test]
    fn the_first_mid_is_found() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:video0\r\nm=application 9\r\na=mid:1\r\n";
        assert_eq!(first_mid(sdp), Some("video0".into()));
        assert_eq!(first_mid("v=0\r\n"), None);
    }
}
