//! The scrcpy capture's IO: push the jar, start the server through a shell stream kept
//! open, open its video and control sockets, and turn the video socket into frames.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frames::FrameAssembler;
use super::hub::{ControlRequest, Source, SourceEvent, SourceStart};
use super::scrcpy_video::{VideoEvent, VideoStreamParser};
use super::{CaptureError, ControlMessage, VideoSize, scrcpy_control};
use crate::adb_host::{self, shell_quote};

/// Where the jar goes on the device.
pub const REMOTE_JAR: &str = "/data/local/tmp/scrcpy-server.jar";
/// How long the server may take to listen (a JVM start on a slow phone takes ~1 s).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two attempts to open the video socket.
const OPEN_RETRY: Duration = Duration::from_millis(100);
/// How long the device name and codec header may take after the sockets are open.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Server output kept for the end reason.
const SERVER_LOG_KEEP: usize = 2048;

/// The server's start command (run through `shell:`).
pub fn server_command(version: &str, scid: u32, max_size: u32) -> String {
    format!(
        "CLASSPATH={REMOTE_JAR} app_process / com.genymobile.scrcpy.Server {} scid={scid:08x} \
         tunnel_forward=true audio=false control=true max_size={max_size} video_codec=h264 cleanup=false",
        shell_quote(version)
    )
}

/// A running scrcpy capture.
pub(super) struct ScrcpySource {
    video: TcpStream,
    server: TcpStream,
    server_log: Vec<u8>,
    parser: VideoStreamParser,
    frames: FrameAssembler,
    keyframes: mpsc::Sender<ControlRequest>,
    control_worker: JoinHandle<()>,
}

impl Drop for ScrcpySource {
    fn drop(&mut self) {
        // Closes the control socket; the video and server streams close with the struct.
        self.control_worker.abort();
    }
}

/// Starts scrcpy on the device; returns the source and the first video size.
pub(super) async fn start(start: SourceStart<'_>) -> Result<(Source, VideoSize), String> {
    let SourceStart {
        adb,
        serial,
        config,
        control,
        control_sender: keyframes,
    } = start;
    let Some(jar_path) = &config.scrcpy_server else {
        return Err("no scrcpy server jar configured".into());
    };
    let jar = tokio::fs::read(jar_path)
        .await
        .map_err(|e| format!("cannot read the scrcpy server {}: {e}", jar_path.display()))?;
    let mtime = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    adb_host::push_bytes(adb, serial, &jar, REMOTE_JAR, 0o644, mtime)
        .await
        .map_err(|e| format!("pushing the scrcpy server failed: {e}"))?;

    let scid = rand::random::<u32>() & 0x7FFF_FFFF;
    let command = server_command(&config.scrcpy_version, scid, config.max_size);
    tracing::debug!(%command, "starting the scrcpy server");
    let mut server = adb_host::open_device_service(adb, serial, &format!("shell:{command}"))
        .await
        .map_err(|e| format!("starting the scrcpy server failed: {e}"))?;
    let socket = format!("localabstract:scrcpy_{scid:08x}");
    let mut server_log = Vec::new();

    // Open the video socket (retrying until the server listens) while watching the server.
    let video = tokio::select! {
        video = open_video(adb, serial, &socket) => video?,
        () = read_until_end(&mut server, &mut server_log) => {
            return Err(server_ended(&server_log));
        }
    };
    let control_socket = adb_host::open_device_service(adb, serial, &socket)
        .await
        .map_err(|e| format!("opening the scrcpy control socket failed: {e}"))?;
    let control_worker = tokio::spawn(run_control(control_socket, control));
    let mut source = ScrcpySource {
        video,
        server,
        server_log,
        parser: VideoStreamParser::new(),
        frames: FrameAssembler::new(),
        keyframes,
        control_worker,
    };
    let size = tokio::time::timeout(HEADER_TIMEOUT, source.read_header())
        .await
        .map_err(|_| "the scrcpy server sent no video header within 10 s".to_string())??;
    Ok((Source::Scrcpy(source), size))
}

async fn open_video(
    adb: std::net::SocketAddrV4,
    serial: &str,
    socket: &str,
) -> Result<TcpStream, String> {
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    let mut last_error = String::from("no attempt");
    while tokio::time::Instant::now() < deadline {
        match adb_host::open_device_service(adb, serial, socket).await {
            Ok(mut stream) => {
                // Forward mode: the server writes one 0x00 byte once it accepted us. A
                // connection that closes at once means it was not listening yet.
                let mut dummy = [0u8; 1];
                match tokio::time::timeout(LISTEN_TIMEOUT, stream.read_exact(&mut dummy)).await {
                    Ok(Ok(_)) => return Ok(stream),
                    Ok(Err(e)) => last_error = format!("closed before the first byte ({e})"),
                    Err(_) => last_error = "no first byte".into(),
                }
            }
            Err(adb_host::AdbError::Refused { message, .. }) => last_error = message,
            Err(e) => return Err(format!("opening the scrcpy video socket failed: {e}")),
        }
        tokio::time::sleep(OPEN_RETRY).await;
    }
    Err(format!(
        "the scrcpy server did not listen on {socket} within {} s ({last_error})",
        LISTEN_TIMEOUT.as_secs()
    ))
}

/// Reads (and logs) the server's output until it ends.
async fn read_until_end(server: &mut TcpStream, log: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match server.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => keep_server_output(log, &buf[..n]),
        }
    }
}

fn keep_server_output(log: &mut Vec<u8>, bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        if !line.trim().is_empty() {
            tracing::debug!(target: "farm_node::capture::scrcpy_server", "{}", line.trim_end());
        }
    }
    log.extend_from_slice(bytes);
    if log.len() > SERVER_LOG_KEEP {
        log.drain(..log.len() - SERVER_LOG_KEEP);
    }
}

fn server_ended(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let last: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = last[last.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "the scrcpy server ended (device disconnected?)".into()
    } else {
        format!("the scrcpy server ended: {tail}")
    }
}

impl ScrcpySource {
    async fn read_header(&mut self) -> Result<VideoSize, String> {
        loop {
            match self.next_event().await? {
                SourceEvent::Size(size) => return Ok(size),
                SourceEvent::Frame(_) => {}
            }
        }
    }

    /// The next frame or size change; cancel-safe (every await is a read).
    pub(super) async fn next_event(&mut self) -> Result<SourceEvent, String> {
        loop {
            // Take every event the bytes already read hold before reading more: one
            // read often carries the name, the header and the first frames together.
            while let Some(event) = self.parser.poll().map_err(|e| e.to_string())? {
                match event {
                    VideoEvent::DeviceName(name) => {
                        tracing::debug!(device_name = %name, "scrcpy video connected")
                    }
                    VideoEvent::Header { width, height } => {
                        let size = VideoSize { width, height };
                        self.frames.set_size(size);
                        return Ok(SourceEvent::Size(size));
                    }
                    VideoEvent::Packet {
                        config: true, data, ..
                    } => {
                        if let Some(size) = self.frames.config(data) {
                            return Ok(SourceEvent::Size(size));
                        }
                    }
                    VideoEvent::Packet {
                        keyframe,
                        pts_us,
                        data,
                        ..
                    } => {
                        return Ok(SourceEvent::Frame(
                            self.frames.frame(pts_us, keyframe, data),
                        ));
                    }
                }
            }
            let mut video_buf = [0u8; 64 * 1024];
            let mut server_buf = [0u8; 4096];
            tokio::select! {
                read = self.video.read(&mut video_buf) => match read {
                    Ok(0) => return Err("the video stream closed (device disconnected or scrcpy server stopped)".into()),
                    Ok(n) => self.parser.push(&video_buf[..n]),
                    Err(e) => return Err(format!("the video stream failed: {e}")),
                },
                read = self.server.read(&mut server_buf) => match read {
                    Ok(0) | Err(_) => return Err(server_ended(&self.server_log)),
                    Ok(n) => keep_server_output(&mut self.server_log, &server_buf[..n]),
                },
            }
        }
    }

    /// Asks the server for a new SPS/PPS and keyframe (reset video).
    pub(super) fn request_keyframe(&mut self) {
        let _ = self.keyframes.try_send((ControlMessage::ResetVideo, None));
    }
}

/// Writes control messages to the control socket, in order; drains what the device sends
/// back (clipboard) so the server never blocks on it.
async fn run_control(socket: TcpStream, mut requests: mpsc::Receiver<ControlRequest>) {
    let _ = socket.set_nodelay(true);
    let (mut reader, mut writer) = socket.into_split();
    let mut sink = [0u8; 4096];
    let mut device_open = true;
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some((message, reply)) = request else { return };
                let result = writer
                    .write_all(&scrcpy_control::encode(&message))
                    .await
                    .map_err(|e| CaptureError::Control(format!("the control socket failed: {e}")));
                let failed = result.is_err();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
                if failed {
                    return;
                }
            }
            read = reader.read(&mut sink), if device_open => {
                if matches!(read, Ok(0) | Err(_)) {
                    device_open = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_command() {
        assert_eq!(
            server_command("3.3.4", 0x1234abc, 1280),
            "CLASSPATH=/data/local/tmp/scrcpy-server.jar app_process / com.genymobile.scrcpy.Server 3.3.4 \
             scid=01234abc tunnel_forward=true audio=false control=true max_size=1280 video_codec=h264 cleanup=false"
        );
    }

    #[test]
    fn end_reasons_quote_the_server() {
        assert_eq!(
            server_ended(b""),
            "the scrcpy server ended (device disconnected?)"
        );
        assert_eq!(
            server_ended(b"a\nb\n\nERROR: c\nd\n"),
            "the scrcpy server ended: b | ERROR: c | d"
        );
        let mut log = Vec::new();
        keep_server_output(&mut log, &[b'x'; 5000]);
        assert_eq!(log.len(), SERVER_LOG_KEEP);
    }
}
