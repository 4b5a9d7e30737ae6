//! Frames for viewers, sans-IO: the last SPS/PPS goes in front of every keyframe, the video
//! size follows the SPS, and keyframe requests reach the device at most once per interval.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::h264::{self, AccessUnit, NAL_PPS, NAL_SPS, START_CODE};
use super::{VideoFrame, VideoSize};

/// The shortest time between two keyframe requests sent to one device.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// The least time between a keyframe request and one for a viewer that just connected.
pub const KEYFRAME_URGENT_FLOOR: Duration = Duration::from_millis(100);

/// Turns config packets and frames (or raw access units) into [`VideoFrame`]s.
#[derive(Debug, Default)]
pub struct FrameAssembler {
    config: Option<Bytes>,
    size: Option<VideoSize>,
}

impl FrameAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// A size known before any SPS (e.g. the scrcpy codec header).
    pub fn set_size(&mut self, size: VideoSize) {
        self.size = Some(size);
    }

    /// A config packet (SPS/PPS in Annex-B). Returns the new video size when its SPS
    /// describes another size than the current one (after a rotation).
    pub fn config(&mut self, data: Bytes) -> Option<VideoSize> {
        let new_size = h264::nal_units(&data)
            .into_iter()
            .find(|nal| h264::nal_type(nal) == Some(NAL_SPS))
            .and_then(h264::sps_size)
            .map(|(width, height)| VideoSize { width, height });
        self.config = Some(data);
        match new_size {
            Some(size) if self.size != Some(size) => {
                self.size = Some(size);
                Some(size)
            }
            _ => None,
        }
    }

    /// A frame; a keyframe gets the last config in front unless it starts with an SPS.
    pub fn frame(&self, pts_us: u64, keyframe: bool, data: Bytes) -> VideoFrame {
        let data = match &self.config {
            Some(config) if keyframe && !h264::starts_with_sps(&data) => {
                let mut joined = BytesMut::with_capacity(config.len() + data.len());
                joined.extend_from_slice(config);
                joined.extend_from_slice(&data);
                joined.freeze()
            }
            _ => data,
        };
        VideoFrame {
            pts_us,
            keyframe,
            data,
        }
    }

    /// An access unit of a raw stream: its SPS/PPS (if any) become the config, and the
    /// frame is built as for [`Self::frame`]. Also returns a new video size, if any.
    pub fn access_unit(
        &mut self,
        pts_us: u64,
        unit: &AccessUnit,
    ) -> (VideoFrame, Option<VideoSize>) {
        let mut config = BytesMut::new();
        let mut picture = BytesMut::with_capacity(unit.data.len());
        for nal in h264::nal_units(&unit.data) {
            let target = match h264::nal_type(nal) {
                Some(NAL_SPS | NAL_PPS) => &mut config,
                _ => &mut picture,
            };
            target.extend_from_slice(&START_CODE);
            target.extend_from_slice(nal);
        }
        let new_size = if config.is_empty() {
            None
        } else {
            self.config(config.freeze())
        };
        (
            self.frame(pts_us, unit.keyframe, picture.freeze()),
            new_size,
        )
    }
}

/// At most one keyframe request per interval; a request inside the interval is kept and
/// sent when the interval ends, unless a keyframe came meanwhile.
#[derive(Debug)]
pub struct KeyframeLimiter {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
    /// The pending request is for a viewer that just connected: it waits only the floor.
    urgent: bool,
}

impl KeyframeLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: None,
            pending: false,
            urgent: false,
        }
    }

    /// A viewer wants a keyframe; `true` means: send the request now.
    pub fn request(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.poll(now)
    }

    /// A viewer just became able to receive (its WebRTC connection is up) and has seen no
    /// keyframe: only the short `KEYFRAME_URGENT_FLOOR` applies, not the whole interval.
    /// `true` means: send the request now.
    pub fn request_urgent(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.urgent = true;
        self.poll(now)
    }

    fn wait(&self) -> Duration {
        if self.urgent {
            KEYFRAME_URGENT_FLOOR
        } else {
            self.interval
        }
    }

    /// When a pending request may be sent (call [`Self::poll`] then).
    pub fn deadline(&self) -> Option<Instant> {
        // A request with nothing sent before goes out at once, so `last_sent` is set
        // whenever one is pending.
        self.last_sent
            .filter(|_| self.pending)
            .map(|last| last + self.wait())
    }

    /// `true` means: send the pending request now.
    pub fn poll(&mut self, now: Instant) -> bool {
        let due = self
            .last_sent
            .is_none_or(|last| now.saturating_duration_since(last) >= self.wait());
        if self.pending && due {
            self.pending = false;
            self.urgent = false;
            self.last_sent = Some(now);
            return true;
        }
        false
    }

    /// A keyframe went out: it answers every request made before it.
    pub fn keyframe_seen(&mut self) {
        self.pending = false;
        self.urgent = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::h264::AccessUnitSplitter;
    use crate::capture::h264::tests::TESTSRC;

    const SPS_PPS: &[u8] = &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xCE];

    #[test]
    fn a_viewer_that_just_connected_waits_only_the_short_floor() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut limiter = KeyframeLimiter::new(ms(500));
        assert!(limiter.request(t0), "the first request goes out");
        assert!(!limiter.request_urgent(t0 + ms(50)), "inside the floor");
        assert_eq!(
            limiter.deadline(),
            Some(t0 + ms(100)),
            "served at the floor, not the interval"
        );
        assert!(limiter.poll(t0 + ms(100)));
        assert!(
            !limiter.request(t0 + ms(200)),
            "ordinary requests keep the interval"
        );
        assert_eq!(limiter.deadline(), Some(t0 + ms(600)));
    }

    #[test]
    fn config_goes_in_front_of_every_keyframe_only() {
        let mut frames = FrameAssembler::new();
        let early = frames.frame(1, true, Bytes::from_static(&[0, 0, 0, 1, 0x65]));
        assert_eq!(&early.data[..], [0, 0, 0, 1, 0x65]);
        assert_eq!(frames.config(Bytes::from_static(SPS_PPS)), None);
        for pts in [10, 20] {
            let key = frames.frame(pts, true, Bytes::from_static(&[0, 0, 0, 1, 0x65, 0x88]));
            assert_eq!(key.pts_us, pts);
            assert!(key.keyframe);
            assert_eq!(&key.data[..SPS_PPS.len()], SPS_PPS);
            assert_eq!(&key.data[SPS_PPS.len()..], [0, 0, 0, 1, 0x65, 0x88]);
            let delta = frames.frame(pts + 1, false, Bytes::from_static(&[0, 0, 0, 1, 0x41]));
            assert_eq!(&delta.data[..], [0, 0, 0, 1, 0x41]);
        }
        // A keyframe that carries its own SPS is left alone.
        let own = [SPS_PPS, &[0, 0, 0, 1, 0x65]].concat();
        let key = frames.frame(30, true, Bytes::from(own.clone()));
        assert_eq!(&key.data[..], own);
    }

    #[test]
    fn the_size_follows_the_sps() {
        let mut frames = FrameAssembler::new();
        frames.set_size(VideoSize {
            width: 360,
            height: 640,
        });
        let mut splitter = AccessUnitSplitter::new();
        splitter.push(TESTSRC).expect("small");
        let first = splitter.poll().expect("a picture");
        let (frame, size) = frames.access_unit(0, &first);
        assert_eq!(size, None, "same size as announced");
        assert!(frame.keyframe && h264::starts_with_sps(&frame.data));
        let mut frames = FrameAssembler::new();
        let (_, size) = frames.access_unit(0, &first);
        assert_eq!(
            size,
            Some(VideoSize {
                width: 360,
                height: 640
            })
        );
        // A rotated SPS (x264 high profile, 720x1280) changes the size.
        let high = crate::capture::h264::tests::from_hex(
            "000000016764001facd940b40a1b0110000003001000000303c0f1831960",
        );
        assert_eq!(
            frames.config(Bytes::from(high)),
            Some(VideoSize {
                width: 720,
                height: 1280
            })
        );
    }

    #[test]
    fn access_units_without_parameter_sets_get_the_last_ones() {
        let mut frames = FrameAssembler::new();
        let unit = |data: &[u8], keyframe| AccessUnit {
            data: data.to_vec(),
            keyframe,
            has_sps: false,
        };
        let first = [SPS_PPS, &[0, 0, 0, 1, 6, 5, 0, 0, 0, 1, 0x65, 1]].concat();
        let (frame, _) = frames.access_unit(5, &unit(&first, true));
        // Parameter sets first, then the SEI and the picture.
        assert_eq!(
            &frame.data[..],
            [SPS_PPS, &[0, 0, 0, 1, 6, 5, 0, 0, 0, 1, 0x65, 1]].concat()
        );
        let (later, _) = frames.access_unit(6, &unit(&[0, 0, 1, 0x65, 2], true));
        assert_eq!(&later.data[..], [SPS_PPS, &[0, 0, 0, 1, 0x65, 2]].concat());
        let (delta, _) = frames.access_unit(7, &unit(&[0, 0, 1, 0x41, 2], false));
        assert_eq!(&delta.data[..], [0, 0, 0, 1, 0x41, 2]);
    }

    #[test]
    fn keyframe_requests_are_rate_limited() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut limiter = KeyframeLimiter::new(KEYFRAME_REQUEST_INTERVAL);
        assert_eq!(limiter.deadline(), None);
        assert!(limiter.request(at(0)));
        assert_eq!(limiter.deadline(), None);
        assert!(!limiter.request(at(100)));
        assert!(!limiter.request(at(200)));
        assert_eq!(limiter.deadline(), Some(at(500)));
        assert!(!limiter.poll(at(499)));
        assert!(limiter.poll(at(500)));
        assert!(!limiter.poll(at(2000)), "one pending request, sent once");
        // A keyframe answers a pending request.
        assert!(!limiter.request(at(600)));
        limiter.keyframe_seen();
        assert_eq!(limiter.deadline(), None);
        assert!(!limiter.poll(at(1000)));
        assert!(limiter.request(at(1000)));
    }
}
