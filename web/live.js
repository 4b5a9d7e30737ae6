// The device page: reserve, then the live screen over WebRTC with touch, keys and text sent back on the `input` data channel.
"use strict";

// Android keycodes for keys a keyboard has that are not text.
const KEYCODES = {
  Enter: 66, Backspace: 67, Delete: 112, Tab: 61, Escape: 111, ArrowUp: 19, ArrowDown: 20,
  ArrowLeft: 21, ArrowRight: 22, Home: 122, End: 123, PageUp: 92, PageDown: 93,
};

const live = {
  deviceId: null,
  device: null,
  myLease: null,       // a lease this page took (renewed while open)
  renewTimer: null,
  ws: null,
  pc: null,
  channel: null,
  control: false,
  size: null,          // {width, height} of the video, from the node
  pointers: new Map(), // browser pointerId -> device pointer 0..9
  ended: false,
  frames: 0,
  fps: 0,
  rtt: null,
  timeline: {},        // performance.now() of each step of the last connection, for diagnostics

  setState(state, text) {
    const el = document.getElementById("live-state");
    el.dataset.state = state;
    el.textContent = text || state;
  },

  note(text) {
    document.getElementById("device-note").textContent = text || "";
  },

  async open(deviceId) {
    live.deviceId = deviceId;
    document.getElementById("device").hidden = false;
    document.getElementById("device-title").textContent = deviceId;
    document.getElementById("reserve-go").addEventListener("click", () => live.reserveAndGo());
    document.getElementById("watch").addEventListener("click", () => live.connect(true));
    document.getElementById("release").addEventListener("click", () => live.release());
    live.bindInput();
    await live.decide();
  },

  async loadDevice() {
    const devices = await farm.api("GET", "/api/v1/devices");
    live.device = devices.find((d) => d.id === live.deviceId) || null;
    return live.device;
  },

  // What the page shows for the device as it is: go live at once when we hold it.
  async decide() {
    let d;
    try {
      d = await live.loadDevice();
    } catch (e) {
      live.setState("error", "error");
      live.note("Cannot load the device: " + e.message);
      return;
    }
    const show = (id, on) => { document.getElementById(id).hidden = !on; };
    show("reserve-go", false); show("watch", false); show("release", false);
    if (!d) {
      live.setState("error", "unknown device");
      live.note("No device " + live.deviceId + " in the farm.");
      return;
    }
    document.getElementById("device-title").textContent = `${d.model} · ${d.id} · Android ${d.android_version} · ${d.site}`;
    if (d.state === "offline" || d.state === "unauthorized") {
      live.setState("ended", "device " + d.state);
      live.note("The device is " + d.state + ".");
      return;
    }
    // ?watch=1 (the "watch" link of an automation session): read-only, whoever holds it.
    if (d.state === "reserved" && new URLSearchParams(location.search).get("watch") === "1") {
      live.note(`Watching ${d.holder}'s session (read-only).`);
      live.connect(true);
    } else if (d.state === "reserved" && d.holder === farm.me.name) {
      show("release", true);
      live.connect(false);
    } else if (d.state === "available") {
      live.setState("idle", "available");
      show("reserve-go", true);
    } else {
      live.setState("idle", "held by " + d.holder);
      live.note(`Held by ${d.holder} until ${d.expires_at}.` + (farm.me.allow_observers ? " You can watch it." : ""));
      show("watch", farm.me.allow_observers);
    }
  },

  mark(step) {
    live.timeline[step] = performance.now();
  },

  async reserveAndGo() {
    live.timeline = {};
    live.mark("reserve");
    live.setState("connecting", "reserving");
    try {
      live.myLease = await farm.api("POST", `/api/v1/devices/${encodeURIComponent(live.deviceId)}/reserve`, {});
    } catch (e) {
      live.setState("error", "not reserved");
      live.note(e.message);
      return;
    }
    // Keep the lease while the page is open: renew at a third of its length.
    const every = Math.max(5, (live.myLease.ttl_seconds || 300) / 3) * 1000;
    live.renewTimer = setInterval(() => {
      farm.api("POST", `/api/v1/leases/${live.myLease.lease_id}/renew`).catch(() => {});
    }, every);
    live.mark("reserved");
    document.getElementById("reserve-go").hidden = true;
    document.getElementById("release").hidden = false;
    live.connect(false);
  },

  async release() {
    const leases = await farm.api("GET", "/api/v1/leases").catch(() => []);
    const lease = leases.find((l) => l.device_id === live.deviceId && l.holder === farm.me.name);
    if (lease) await farm.api("POST", `/api/v1/leases/${lease.lease_id}/release`).catch((e) => live.note(e.message));
    clearInterval(live.renewTimer);
  },

  connect(observe) {
    live.ended = false;
    live.setState("connecting", "connecting");
    live.note("");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const q = "token=" + encodeURIComponent(farm.token()) + (observe ? "&observe=1" : "");
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/devices/${encodeURIComponent(live.deviceId)}/live?${q}`);
    live.ws = ws;
    live.mark("socket");
    ws.onopen = () => live.mark("socket_open");
    ws.onmessage = (event) => live.onSignal(JSON.parse(event.data));
    ws.onclose = () => {
      if (!live.ended) live.end("signalling connection lost");
    };
  },

  send(msg) {
    if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(msg));
  },

  async onSignal(msg) {
    switch (msg.type) {
      case "ready": return live.startPeer(msg);
      case "answer":
        live.mark("answer");
        return live.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      case "candidate":
        if (live.pc && msg.candidate) {
          return live.pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex }).catch(() => {});
        }
        return;
      case "size": return live.setSize(msg.width, msg.height);
      case "error": live.note(msg.message); return;
      case "end": return live.end(msg.reason);
    }
  },

  async startPeer(ready) {
    live.mark("ready");
    live.control = ready.control;
    const relay = new URLSearchParams(location.search).get("relay") === "1";
    const pc = new RTCPeerConnection({ iceServers: ready.iceServers, iceTransportPolicy: relay ? "relay" : "all" });
    live.pc = pc;
    const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
    if (transceiver.receiver) {
      transceiver.receiver.jitterBufferTarget = 0;
      if ("playoutDelayHint" in transceiver.receiver) transceiver.receiver.playoutDelayHint = 0;
    }
    if (ready.control) {
      const channel = pc.createDataChannel("input", { ordered: true });
      live.channel = channel;
      channel.onmessage = (event) => live.onInputReply(JSON.parse(event.data));
      channel.onopen = () => live.ping();
    }
    pc.ontrack = (event) => {
      live.mark("track");
      const video = document.getElementById("video");
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
      video.play().catch(() => {});
      live.watchFrames(video);
    };
    pc.onicecandidate = (event) => {
      if (event.candidate) {
        const c = event.candidate;
        live.send({ type: "candidate", candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
      }
    };
    pc.onconnectionstatechange = () => {
      if (live.ended) return;
      if (pc.connectionState === "connected") {
        live.mark("connected");
        live.setState("live", ready.control ? "live" : "live (watching)");
      }
      if (pc.connectionState === "disconnected" || pc.connectionState === "failed") live.restartIce();
    };
    await pc.setLocalDescription(await pc.createOffer());
    live.send({ type: "offer", sdp: pc.localDescription.sdp });
    live.mark("offer");
  },

  async restartIce() {
    live.setState("reconnecting", "reconnecting");
    try {
      await live.pc.setLocalDescription(await live.pc.createOffer({ iceRestart: true }));
      live.send({ type: "offer", sdp: live.pc.localDescription.sdp });
    } catch (_) { /* the session ends through signalling */ }
  },

  end(reason) {
    if (live.ended) return;
    live.ended = true;
    live.setState("ended", reason);
    live.note("Session ended: " + reason + ".");
    if (live.pc) live.pc.close();
    if (live.ws) live.ws.close();
    live.channel = null;
    clearInterval(live.renewTimer);
  },

  setSize(width, height) {
    live.size = { width, height };
    document.getElementById("screen").style.aspectRatio = `${width} / ${height}`;
  },

  onInputReply(msg) {
    if (msg.type === "size") live.setSize(msg.width, msg.height);
    else if (msg.type === "pong") live.rtt = performance.now() - msg.t;
    else if (msg.type === "error") live.note("Input refused: " + msg.message);
  },

  ping() {
    if (!live.channel || live.channel.readyState !== "open") return;
    live.input({ type: "ping", t: performance.now() });
    setTimeout(live.ping, 2000);
  },

  input(msg) {
    if (live.channel && live.channel.readyState === "open") live.channel.send(JSON.stringify(msg));
  },

  watchFrames(video) {
    let last = performance.now();
    let count = 0;
    const onFrame = () => {
      if (live.frames === 0) live.mark("first_frame");
      live.frames++;
      count++;
      const now = performance.now();
      if (now - last >= 1000) {
        live.fps = Math.round((count * 1000) / (now - last));
        count = 0;
        last = now;
        const rtt = live.rtt === null ? "" : ` · input RTT ${live.rtt.toFixed(1)} ms`;
        document.getElementById("readout").textContent = `${video.videoWidth}×${video.videoHeight} · ${live.fps} fps${rtt}`;
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  },

  // Maps a pointer position to video pixels, honouring the letterboxing of object-fit: contain.
  toDevice(event) {
    const video = document.getElementById("video");
    const size = live.size || { width: video.videoWidth, height: video.videoHeight };
    if (!size.width || !size.height) return null;
    const box = video.getBoundingClientRect();
    const scale = Math.min(box.width / size.width, box.height / size.height);
    const left = box.left + (box.width - size.width * scale) / 2;
    const top = box.top + (box.height - size.height * scale) / 2;
    const x = Math.round((event.clientX - left) / scale);
    const y = Math.round((event.clientY - top) / scale);
    if (x < 0 || y < 0 || x >= size.width || y >= size.height) return null;
    return { x, y };
  },

  bindInput() {
    const video = document.getElementById("video");
    const screen = document.getElementById("screen");
    const pointerFor = (event) => {
      if (!live.pointers.has(event.pointerId)) {
        const used = new Set(live.pointers.values());
        let id = 0;
        while (used.has(id) && id < 9) id++;
        live.pointers.set(event.pointerId, id);
      }
      return live.pointers.get(event.pointerId);
    };
    const touch = (action) => (event) => {
      if (!live.control) return;
      event.preventDefault();
      const at = live.toDevice(event);
      if (action === "down") {
        if (!at) return;
        video.setPointerCapture(event.pointerId);
        screen.focus();
      }
      if (!live.pointers.has(event.pointerId) && action !== "down") return;
      const pointer = pointerFor(event);
      const size = live.size || { width: video.videoWidth, height: video.videoHeight };
      const clamp = (v, max) => Math.max(0, Math.min(max - 1, v));
      const pos = at || { x: clamp(Math.round(event.offsetX), size.width), y: clamp(Math.round(event.offsetY), size.height) };
      live.input({ type: "touch", action, pointer, x: pos.x, y: pos.y });
      if (action === "up") live.pointers.delete(event.pointerId);
    };
    video.addEventListener("pointerdown", touch("down"));
    video.addEventListener("pointermove", (event) => { if (event.buttons || event.pointerType === "touch") touch("move")(event); });
    video.addEventListener("pointerup", touch("up"));
    video.addEventListener("pointercancel", touch("up"));
    video.addEventListener("contextmenu", (event) => event.preventDefault());
    video.addEventListener("wheel", (event) => {
      const at = live.toDevice(event);
      if (!live.control || !at) return;
      event.preventDefault();
      live.input({ type: "scroll", x: at.x, y: at.y, dx: Math.sign(-event.deltaX), dy: Math.sign(-event.deltaY) });
    }, { passive: false });

    screen.addEventListener("keydown", (event) => {
      if (!live.control || event.ctrlKey || event.metaKey) return;
      if (KEYCODES[event.key] !== undefined) {
        event.preventDefault();
        live.input({ type: "key", action: "down", keycode: KEYCODES[event.key] });
        live.input({ type: "key", action: "up", keycode: KEYCODES[event.key] });
      } else if (event.key.length === 1) {
        event.preventDefault();
        live.input({ type: "text", text: event.key });
      }
    });
    screen.addEventListener("paste", (event) => {
      const text = event.clipboardData.getData("text");
      if (live.control && text) live.input({ type: "clipboard", text: text.slice(0, 4000), paste: true });
    });
    for (const button of document.querySelectorAll("#keys [data-key]")) {
      button.addEventListener("click", () => {
        const keycode = Number(button.dataset.key);
        live.input({ type: "key", action: "down", keycode });
        live.input({ type: "key", action: "up", keycode });
      });
    }
    document.getElementById("rotate").addEventListener("click", () => live.input({ type: "rotate" }));
    document.getElementById("screenshot").addEventListener("click", () => {
      const canvas = document.createElement("canvas");
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      canvas.toBlob((blob) => {
        const a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = `${live.deviceId}-${new Date().toISOString().replace(/[:.]/g, "-")}.png`;
        a.click();
      }, "image/png");
    });
    window.addEventListener("beforeunload", () => live.send({ type: "bye" }));
  },
};

window.livePage = live;
