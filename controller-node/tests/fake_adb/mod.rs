//! A fake adb server with one fake device on 127.0.0.1:0, for capture tests: it speaks the
//! host protocol (`host:transport:`, `sync:` push, `shell:`, `exec:`, `localabstract:`),
//! plays a scrcpy server from canned H.264 (x264 testsrc 360x640) and records what the
//! node sent (pushed files, commands, control bytes).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_node::capture::h264::{self, AccessUnitSplitter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

pub const SERIAL: &str = "fake-1";
pub const TESTSRC: &[u8] = include_bytes!("../data/testsrc-360x640.h264");

/// How the fake behaves.
#[derive(Debug, Clone, Default)]
pub struct FakeOptions {
    /// The codec id the fake scrcpy server announces (default "h264").
    pub codec: Option<[u8; 4]>,
    /// How many first opens of the video socket fail (server "not listening yet").
    pub refuse_first_opens: usize,
}

/// What the fake saw; the test reads it.
#[derive(Default)]
pub struct Seen {
    pub pushed: Mutex<Vec<(String, Vec<u8>)>>,
    pub commands: Mutex<Vec<String>>,
}

pub struct FakeAdb {
    pub addr: SocketAddrV4,
    pub seen: Arc<Seen>,
    /// Open scrcpy video sockets plus running screenrecord streams.
    pub video_streams: watch::Receiver<usize>,
    /// Bytes that arrived on scrcpy control sockets.
    pub control: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Unplugs the device: every stream closes, new ones are refused.
    pub unplug: Arc<Notify>,
}

struct Shared {
    options: FakeOptions,
    seen: Arc<Seen>,
    video_streams: watch::Sender<usize>,
    control: mpsc::UnboundedSender<Vec<u8>>,
    unplugged: watch::Sender<bool>,
    /// Sockets opened per scid, to tell the video socket (first) from the control one.
    opens: Mutex<Vec<(String, usize)>>,
    refusals_left: Mutex<usize>,
    /// A control socket was opened; the video socket then sends its header.
    control_opened: Notify,
    /// ResetVideo arrived on a control socket.
    reset: Notify,
}

impl FakeAdb {
    pub async fn start(options: FakeOptions) -> FakeAdb {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("bound").port();
        let (video_tx, video_streams) = watch::channel(0);
        let (control_tx, control) = mpsc::unbounded_channel();
        let (unplugged, _) = watch::channel(false);
        let seen = Arc::new(Seen::default());
        let shared = Arc::new(Shared {
            refusals_left: Mutex::new(options.refuse_first_opens),
            options,
            seen: seen.clone(),
            video_streams: video_tx,
            control: control_tx,
            unplugged,
            opens: Mutex::new(Vec::new()),
            control_opened: Notify::new(),
            reset: Notify::new(),
        });
        let unplug = Arc::new(Notify::new());
        let on_unplug = unplug.clone();
        let unplug_shared = shared.clone();
        tokio::spawn(async move {
            on_unplug.notified().await;
            unplug_shared.unplugged.send_replace(true);
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = handle(stream, shared).await;
                });
            }
        });
        FakeAdb {
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            seen,
            video_streams,
            control,
            unplug,
        }
    }
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let length = usize::from_str_radix(std::str::from_utf8(&prefix).unwrap_or("zz"), 16)
        .map_err(|_| std::io::Error::other("bad prefix"))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn fail(stream: &mut TcpStream, message: &str) -> std::io::Result<()> {
    let reply = format!("FAIL{:04x}{message}", message.len());
    stream.write_all(reply.as_bytes()).await
}

async fn handle(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let request = read_request(&mut stream).await?;
    let unplugged_now = *shared.unplugged.borrow();
    if request != format!("host:transport:{SERIAL}") || unplugged_now {
        return fail(&mut stream, &format!("device '{SERIAL}' not found")).await;
    }
    stream.write_all(b"OKAY").await?;
    let service = read_request(&mut stream).await?;
    shared
        .seen
        .commands
        .lock()
        .expect("not poisoned")
        .push(service.clone());
    let mut unplugged = shared.unplugged.subscribe();
    if service == "sync:" {
        stream.write_all(b"OKAY").await?;
        return handle_sync(stream, &shared).await;
    }
    if service == "shell:wm size" {
        stream.write_all(b"OKAY").await?;
        return stream.write_all(b"Physical size: 720x1280\n").await;
    }
    if service.starts_with("shell:input ") {
        return stream.write_all(b"OKAY").await;
    }
    if service.starts_with("shell:CLASSPATH=") {
        stream.write_all(b"OKAY").await?;
        stream.write_all(b"[server] INFO: Device: fake\n").await?;
        // The server runs until the node closes the shell or the device goes away.
        let mut sink = [0u8; 64];
        tokio::select! {
            _ = stream.read(&mut sink) => {}
            () = until_unplugged(&mut unplugged) => {}
        }
        return Ok(());
    }
    if let Some(name) = service.strip_prefix("localabstract:scrcpy_") {
        let refuse = {
            let mut left = shared.refusals_left.lock().expect("not poisoned");
            let refuse = *left > 0;
            *left = left.saturating_sub(1);
            refuse
        };
        if refuse {
            return fail(&mut stream, "closed").await;
        }
        let index = {
            let mut opens = shared.opens.lock().expect("not poisoned");
            match opens.iter_mut().find(|(scid, _)| scid == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    opens.push((name.to_string(), 1));
                    0
                }
            }
        };
        stream.write_all(b"OKAY").await?;
        return if index == 0 {
            shared.video_streams.send_modify(|n| *n += 1);
            let result = scrcpy_video(&mut stream, &shared, &mut unplugged).await;
            shared.video_streams.send_modify(|n| *n -= 1);
            result
        } else {
            scrcpy_control(stream, &shared, &mut unplugged).await
        };
    }
    if service.starts_with("exec:screenrecord ") {
        stream.write_all(b"OKAY").await?;
        shared.video_streams.send_modify(|n| *n += 1);
        let result = screenrecord(&mut stream, &mut unplugged).await;
        shared.video_streams.send_modify(|n| *n -= 1);
        return result;
    }
    fail(&mut stream, &format!("unknown service {service}")).await
}

async fn handle_sync(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).await?;
    assert_eq!(&head[..4], b"SEND");
    let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let mut target = vec![0u8; length];
    stream.read_exact(&mut target).await?;
    let target = String::from_utf8_lossy(&target).into_owned();
    let mut data = Vec::new();
    loop {
        stream.read_exact(&mut head).await?;
        let arg = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        match &head[..4] {
            b"DATA" => {
                assert!(arg <= 64 * 1024, "DATA chunk of {arg} bytes");
                let mut chunk = vec![0u8; arg];
                stream.read_exact(&mut chunk).await?;
                data.extend_from_slice(&chunk);
            }
            b"DONE" => break,
            other => panic!("unexpected sync id {other:?}"),
        }
    }
    shared
        .seen
        .pushed
        .lock()
        .expect("not poisoned")
        .push((target, data));
    stream.write_all(b"OKAY\0\0\0\0").await
}

/// The canned stream as MediaCodec gives it: one config packet (SPS+PPS), then pictures
/// without parameter sets.
pub fn canned_packets() -> (Vec<u8>, Vec<(bool, Vec<u8>)>) {
    let mut splitter = AccessUnitSplitter::new();
    splitter.push(TESTSRC).expect("small stream");
    splitter.flush();
    let mut config = Vec::new();
    let mut pictures = Vec::new();
    while let Some(unit) = splitter.poll() {
        let mut picture = Vec::new();
        for nal in h264::nal_units(&unit.data) {
            let target = match h264::nal_type(nal) {
                Some(h264::NAL_SPS | h264::NAL_PPS) if pictures.is_empty() => &mut config,
                Some(h264::NAL_SPS | h264::NAL_PPS) => continue,
                _ => &mut picture,
            };
            target.extend_from_slice(&h264::START_CODE);
            target.extend_from_slice(nal);
        }
        pictures.push((unit.keyframe, picture));
    }
    (config, pictures)
}

fn packet(flags: u64, pts: u64, data: &[u8]) -> Vec<u8> {
    let mut out = (flags | pts).to_be_bytes().to_vec();
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

async fn scrcpy_video(
    stream: &mut TcpStream,
    shared: &Shared,
    unplugged: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.write_all(&[0]).await?;
    shared.control_opened.notified().await;
    let mut name = b"Fake Phone".to_vec();
    name.resize(64, 0);
    stream.write_all(&name).await?;
    let codec = shared.options.codec.unwrap_or(*b"h264");
    stream.write_all(&codec).await?;
    stream.write_all(&[0, 0, 1, 0x68, 0, 0, 2, 0x80]).await?; // 360x640
    let (config, pictures) = canned_packets();
    stream.write_all(&packet(1 << 63, 0, &config)).await?;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut index = 0usize;
    let mut pts = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shared.reset.notified() => {
                stream.write_all(&packet(1 << 63, 0, &config)).await?;
                index = 0;
            }
            () = until_unplugged(unplugged) => return Ok(()),
        }
        let (key, data) = &pictures[index % pictures.len()];
        let flags = if *key { 1 << 62 } else { 0 };
        stream.write_all(&packet(flags, pts, data)).await?;
        index += 1;
        pts += 33_333;
    }
}

async fn scrcpy_control(
    mut stream: TcpStream,
    shared: &Shared,
    unplugged: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    shared.control_opened.notify_one();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::select! {
            n = stream.read(&mut buf) => n?,
            () = until_unplugged(unplugged) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        if buf[..n].contains(&17) {
            shared.reset.notify_one();
        }
        let _ = shared.control.send(buf[..n].to_vec());
    }
}

async fn screenrecord(
    stream: &mut TcpStream,
    unplugged: &mut watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    loop {
        for chunk in TESTSRC.chunks(1500) {
            tokio::select! {
                _ = ticker.tick() => {}
                () = until_unplugged(unplugged) => return Ok(()),
            }
            stream.write_all(chunk).await?;
        }
    }
}

async fn until_unplugged(unplugged: &mut watch::Receiver<bool>) {
    let _ = unplugged.wait_for(|u| *u).await;
}
