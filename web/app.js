// The web UI's shared part and device list: token sign-in (also from ?token=T), API calls, filters, reserve/release, sessions.
"use strict";

const farm = {
  tokenKey: "farm.token",
  me: null,

  token() {
    const fromUrl = new URLSearchParams(location.search).get("token");
    if (fromUrl) {
      localStorage.setItem(farm.tokenKey, fromUrl);
      const rest = new URLSearchParams(location.search);
      rest.delete("token");
      const query = rest.toString();
      history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
    }
    return localStorage.getItem(farm.tokenKey);
  },

  // Calls the broker's JSON API; throws an Error whose message is the broker's.
  async api(method, path, body) {
    const headers = { authorization: "Bearer " + farm.token() };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
    if (response.status === 401) {
      localStorage.removeItem(farm.tokenKey);
      farm.showSignIn("That token was not accepted: " + (data && data.error || "sign in again"));
      throw new Error("not signed in");
    }
    if (!response.ok) throw new Error((data && data.error) || ("HTTP " + response.status));
    return data;
  },

  showSignIn(message) {
    for (const id of ["fleet", "device"]) document.getElementById(id).hidden = true;
    const form = document.getElementById("signin");
    form.hidden = false;
    if (message) form.querySelector(".hint").textContent = message;
  },

  cell(text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "-" : String(text);
    return td;
  },
};

// ------------------------------------------------------------------ device list

const list = {
  devices: [],

  async refresh() {
    const status = document.getElementById("status");
    try {
      list.devices = await farm.api("GET", "/api/v1/devices");
    } catch (e) {
      status.textContent = "Cannot list devices: " + e.message + " (retrying)";
      return;
    }
    list.fillFilters();
    list.render();
    status.textContent = list.devices.length + " devices, updated " + new Date().toLocaleTimeString();
    try {
      list.renderSessions(await farm.api("GET", "/api/v1/sessions"));
    } catch (_) { /* the table keeps its last content */ }
  },

  fillFilters() {
    for (const field of ["site", "platform", "model"]) {
      const select = document.querySelector(`#filters [name=${field}]`);
      const known = new Set([...select.options].map((o) => o.value));
      for (const value of new Set(list.devices.map((d) => d[field] || ""))) {
        if (value && !known.has(value)) select.append(new Option(value, value));
      }
    }
  },

  render() {
    const filters = Object.fromEntries(new FormData(document.getElementById("filters")));
    const shown = list.devices.filter((d) =>
      Object.entries(filters).every(([k, v]) => !v || d[k] === v));
    const body = document.querySelector("#devices tbody");
    body.replaceChildren(...shown.map((d) => {
      const tr = document.createElement("tr");
      tr.className = "state-" + d.state;
      tr.dataset.device = d.id;
      const link = document.createElement("a");
      link.href = "/device/" + encodeURIComponent(d.id);
      link.textContent = d.id;
      const id = document.createElement("td");
      id.append(link);
      const action = document.createElement("td");
      if (d.state === "available") {
        action.append(list.button("Reserve", async () => {
          await farm.api("POST", `/api/v1/devices/${encodeURIComponent(d.id)}/reserve`, {});
          list.refresh();
        }));
      } else if (d.state === "reserved" && farm.me && (d.holder === farm.me.name || farm.me.role === "admin")) {
        action.append(list.button("Release", async () => {
          const leases = await farm.api("GET", "/api/v1/leases");
          const lease = leases.find((l) => l.device_id === d.id);
          if (lease) await farm.api("POST", `/api/v1/leases/${lease.lease_id}/release`);
          list.refresh();
        }));
      }
      tr.append(id, farm.cell(d.state), farm.cell(d.model), farm.cell(d.android_version),
        farm.cell(d.screen_width ? d.screen_width + "×" + d.screen_height : ""),
        farm.cell(d.battery_level >= 0 ? d.battery_level + "%" : ""), farm.cell(d.site), farm.cell(d.node),
        farm.cell(d.holder ? d.holder + " until " + d.expires_at : ""), action);
      return tr;
    }));
  },

  renderSessions(sessions) {
    const body = document.querySelector("#sessions tbody");
    body.replaceChildren(...sessions.slice(0, 20).map((s) => {
      const tr = document.createElement("tr");
      const device = farm.cell(s.device_id);
      // A running automation session can be watched live, read-only, by its owner and admins.
      const mine = farm.me && (s.user === farm.me.name || farm.me.role === "admin");
      if (!s.ended_at && s.kind === "webdriver" && mine && s.device_id) {
        const watch = document.createElement("a");
        watch.href = `/device/${encodeURIComponent(s.device_id)}?watch=1`;
        watch.textContent = " watch";
        watch.className = "watch";
        device.append(watch);
      }
      tr.append(farm.cell(s.id), farm.cell(s.kind), device, farm.cell(s.user), farm.cell(s.mode),
        farm.cell(s.started_at), farm.cell(s.ended_at || "running"), farm.cell(s.end_reason));
      return tr;
    }));
  },

  button(label, action) {
    const b = document.createElement("button");
    b.textContent = label;
    b.addEventListener("click", async () => {
      b.disabled = true;
      try { await action(); } catch (e) { document.getElementById("status").textContent = label + " failed: " + e.message; }
      b.disabled = false;
    });
    return b;
  },
};

// ------------------------------------------------------------------------ start

document.getElementById("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem(farm.tokenKey, document.getElementById("token").value.trim());
  start();
});
document.getElementById("signout").addEventListener("click", () => {
  localStorage.removeItem(farm.tokenKey);
  location.href = "/";
});
document.getElementById("filters").addEventListener("change", () => list.render());

async function start() {
  if (!farm.token()) {
    farm.showSignIn();
    return;
  }
  try {
    farm.me = await farm.api("GET", "/api/v1/me");
  } catch (e) {
    if (e.message !== "not signed in") farm.showSignIn("Cannot reach the broker: " + e.message);
    return;
  }
  document.getElementById("signin").hidden = true;
  document.getElementById("who").textContent = farm.me.name + " (" + farm.me.role + ")";
  document.getElementById("signout").hidden = false;
  const match = location.pathname.match(/^\/device\/(.+)$/);
  if (match && window.livePage) {
    window.livePage.open(decodeURIComponent(match[1]));
  } else {
    document.getElementById("fleet").hidden = false;
    list.refresh();
    setInterval(list.refresh, 2000);
  }
}

window.addEventListener("DOMContentLoaded", start);
