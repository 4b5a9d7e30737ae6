// Drives headless Chromium for the Rust end-to-end tests: reads JSON commands on stdin, answers JSON lines on stdout.
//
// Each command is {"id": N, "cmd": NAME, ...args}; each answer {"id": N, "ok": true, "result": ...}
// or {"id": N, "ok": false, "error": "..."}. Pages are named by the test ("alice", "bob", ...),
// each in a browser context of its own (its own localStorage, so its own signed-in user).
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const flags = [
  "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run", "--disable-quic",
  // Loopback WebRTC in headless Chromium (PROTOCOLS.md).
  "--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream",
  "--autoplay-policy=no-user-gesture-required",
];
const browser = await chromium.launch({
  executablePath: process.env.FARM_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: flags,
});
const pages = new Map();

function page(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page named ${name}: open it first`);
  return p;
}

// Page coordinates of a point given in video pixels (the inverse of live.toDevice).
async function videoPoint(p, x, y) {
  return p.evaluate(([x, y]) => {
    const video = document.getElementById("video");
    const size = window.livePage.size || { width: video.videoWidth, height: video.videoHeight };
    const box = video.getBoundingClientRect();
    const scale = Math.min(box.width / size.width, box.height / size.height);
    const left = box.left + (box.width - size.width * scale) / 2;
    const top = box.top + (box.height - size.height * scale) / 2;
    return { x: left + (x + 0.5) * scale, y: top + (y + 0.5) * scale };
  }, [x, y]);
}

const commands = {
  async open({ name, url }) {
    const context = await browser.newContext({ viewport: { width: 1200, height: 1000 } });
    const p = await context.newPage();
    p.on("console", (m) => process.stderr.write(`[${name} console] ${m.text()}\n`));
    pages.set(name, p);
    await p.goto(url);
    return true;
  },
  async goto({ name, url }) {
    await page(name).goto(url);
    return true;
  },
  async close({ name }) {
    await page(name).context().close();
    pages.delete(name);
    return true;
  },
  async click({ name, selector }) {
    await page(name).click(selector, { timeout: 5000 });
    return true;
  },
  async text({ name, selector }) {
    return page(name).textContent(selector, { timeout: 5000 });
  },
  async visible({ name, selector }) {
    return page(name).isVisible(selector);
  },
  // The live page's state badge and note.
  async state({ name }) {
    return page(name).evaluate(() => ({
      state: document.getElementById("live-state").dataset.state,
      text: document.getElementById("live-state").textContent,
      note: document.getElementById("device-note").textContent,
    }));
  },
  async video({ name }) {
    return page(name).evaluate(() => {
      const v = document.getElementById("video");
      return { width: v.videoWidth, height: v.videoHeight, frames: window.livePage.frames, control: window.livePage.control };
    });
  },
  // Clicks `selector`, then measures the time to the first presented video frame.
  async clickToFirstFrame({ name, selector, timeoutMs }) {
    const p = page(name);
    await p.evaluate(() => {
      window.__firstFrame = new Promise((resolve) => {
        const video = document.getElementById("video");
        const t0 = performance.now();
        window.__clickedAt = t0;
        const poll = () => {
          if (video.videoWidth > 0) {
            video.requestVideoFrameCallback((now) => resolve(now - t0));
          } else {
            setTimeout(poll, 5);
          }
        };
        poll();
      });
    });
    await p.click(selector, { timeout: 5000 });
    return p.evaluate((ms) => Promise.race([
      window.__firstFrame,
      new Promise((_, reject) => setTimeout(() => reject(new Error("no video frame within " + ms + " ms")), ms)),
    ]), timeoutMs || 10000);
  },
  async tap({ name, x, y }) {
    const p = page(name);
    const at = await videoPoint(p, x, y);
    await p.mouse.click(at.x, at.y);
    return at;
  },
  async swipe({ name, x1, y1, x2, y2, steps }) {
    const p = page(name);
    const a = await videoPoint(p, x1, y1);
    const b = await videoPoint(p, x2, y2);
    await p.mouse.move(a.x, a.y);
    await p.mouse.down();
    await p.mouse.move(b.x, b.y, { steps: steps || 10 });
    await p.mouse.up();
    return true;
  },
  async type({ name, text }) {
    const p = page(name);
    await p.focus("#screen");
    await p.keyboard.type(text);
    return true;
  },
  // The colour of one video pixel (video coordinates), read through a canvas.
  async pixel({ name, x, y }) {
    return page(name).evaluate(([x, y]) => {
      const video = document.getElementById("video");
      const canvas = document.createElement("canvas");
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(video, 0, 0);
      return Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
    }, [x, y]);
  },
  async eval({ name, js }) {
    return page(name).evaluate(js);
  },
};

const out = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");
out({ id: 0, ok: true, result: "ready" });
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    out({ id: -1, ok: false, error: "bad command line: " + e.message });
    continue;
  }
  const handler = commands[msg.cmd];
  if (!handler) {
    out({ id: msg.id, ok: false, error: "unknown command " + msg.cmd });
    continue;
  }
  try {
    out({ id: msg.id, ok: true, result: (await handler(msg)) ?? null });
  } catch (e) {
    out({ id: msg.id, ok: false, error: String(e && e.message || e) });
  }
}
await browser.close();
