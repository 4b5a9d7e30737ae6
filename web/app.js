// The web UI's script: token sign-in (also from ?token=T) and a device table refreshed every 2 s.
"use strict";

const tokenKey = "farm.token";

function currentToken() {
  const fromUrl = new URLSearchParams(location.search).get("token");
  if (fromUrl) {
    localStorage.setItem(tokenKey, fromUrl);
    history.replaceState(null, "", location.pathname);
  }
  return localStorage.getItem(tokenKey);
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "-" : String(text);
  return td;
}

async function refresh() {
  const status = document.getElementById("status");
  let response;
  try {
    response = await fetch("/api/v1/devices", { headers: { authorization: "Bearer " + currentToken() } });
  } catch (e) {
    status.textContent = "Broker unreachable; retrying…";
    return;
  }
  if (response.status === 401) {
    localStorage.removeItem(tokenKey);
    showSignIn("That token was not accepted.");
    return;
  }
  if (!response.ok) {
    status.textContent = "Error " + response.status;
    return;
  }
  const devices = await response.json();
  const body = document.querySelector("#devices tbody");
  body.replaceChildren(...devices.map((d) => {
    const tr = document.createElement("tr");
    tr.className = "state-" + d.state;
    tr.append(cell(d.id), cell(d.state), cell(d.model), cell(d.android_version),
      cell(d.screen_width ? d.screen_width + "×" + d.screen_height : ""),
      cell(d.battery_level >= 0 ? d.battery_level + "%" : ""), cell(d.site), cell(d.node),
      cell(d.holder ? d.holder + " until " + d.expires_at : ""));
    return tr;
  }));
  status.textContent = devices.length + " devices, updated " + new Date().toLocaleTimeString();
}

function showSignIn(message) {
  document.getElementById("fleet").hidden = true;
  const form = document.getElementById("signin");
  form.hidden = false;
  if (message) form.querySelector(".hint").textContent = message;
}

document.getElementById("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem(tokenKey, document.getElementById("token").value.trim());
  start();
});

function start() {
  if (!currentToken()) {
    showSignIn();
    return;
  }
  document.getElementById("signin").hidden = true;
  document.getElementById("fleet").hidden = false;
  refresh();
}

setInterval(() => { if (currentToken()) refresh(); }, 2000);
start();
