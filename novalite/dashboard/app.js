// The dashboard: login, then servers (live), images, flavors, key pairs and, for admins, hosts.
// All data goes into the page through dom.js (text nodes only); every call is a public API call.

import * as api from "./api.js";
import { $, bytes, clear, fillSelect, h, setText } from "./dom.js";

const POLL_MS = 2000;
const POWER_STATES = { 0: "NOSTATE", 1: "Running", 3: "Paused", 4: "Shutdown", 6: "Crashed", 7: "Suspended" };

let session = null;
let view = "servers";
let pollTimer = null;
let pollInFlight = Promise.resolve(); // the poll's current round of requests
let images = [];
let flavors = [];
const serverRows = new Map(); // server id -> {tr, cells, buttons}
let logServer = null; // the server whose console log is shown

// --- messages -------------------------------------------------------------------------------

function say(text, { error = false } = {}) {
  const message = $("#message");
  setText(message, text);
  message.classList.toggle("error", error);
  message.hidden = !text;
}

function failed(what) {
  return (err) => say(`${what} failed: ${err.message}`, { error: true });
}

// --- login ----------------------------------------------------------------------------------

function showLogin(text = "") {
  session = null;
  stopPolling();
  // Nothing of the last user stays in the page for the next one.
  serverRows.clear();
  document.querySelectorAll("tbody").forEach((tbody) => clear(tbody));
  closeConsoleLog();
  $("#nav").hidden = true;
  $("#who").hidden = true;
  document.querySelectorAll(".view").forEach((section) => (section.hidden = true));
  $("#login").hidden = false;
  say(text, { error: Boolean(text) });
  $("#login-user").focus();
}

async function submitLogin(event) {
  event.preventDefault();
  const button = $("#login-submit");
  button.disabled = true;
  try {
    session = await api.login($("#login-user").value, $("#login-password").value, $("#login-project").value);
    api.saveSession(session);
    $("#login-password").value = "";
    say("");
    showApp();
  } catch (err) {
    say(`Login failed: ${err.message}`, { error: true });
  } finally {
    button.disabled = false;
  }
}

async function doLogout() {
  const old = session;
  api.clearSession();
  showLogin();
  // Revoke the token once the poll's last requests are answered (they would meet a 401).
  await pollInFlight.catch(() => {});
  if (old) await api.logout(old).catch(() => {});
}

// --- the application shell ------------------------------------------------------------------

function applyRoles() {
  document.querySelectorAll(".needs-write").forEach((el) => (el.hidden = !session.canWrite));
  document.querySelectorAll(".needs-admin").forEach((el) => (el.hidden = !session.isAdmin));
  // Glance lets only admins publish an image: do not offer it to others.
  document.querySelectorAll("#upload-visibility option.needs-admin").forEach((option) => {
    option.disabled = !session.isAdmin;
  });
  if ($("#upload-visibility").selectedOptions[0].disabled) $("#upload-visibility").value = "shared";
}

function showApp() {
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#who").hidden = false;
  const role = session.isAdmin ? "admin" : session.canWrite ? "member" : "reader";
  setText($("#whoami"), `${session.user.name} @ ${session.project.name} (${role})`);
  applyRoles();
  show(view === "hosts" && !session.isAdmin ? "servers" : view);
  refreshChoices().catch(failed("Loading flavors and images"));
  startPolling();
}

function show(name) {
  view = name;
  document.querySelectorAll(".view").forEach((section) => (section.hidden = section.id !== `view-${name}`));
  document.querySelectorAll("#nav button").forEach((button) => {
    button.classList.toggle("current", button.dataset.view === name);
  });
  refreshView().catch(failed(`Loading ${name}`));
}

async function refreshView() {
  if (!session) return;
  if (view === "servers") await refreshServers();
  else if (view === "images") await refreshImages();
  else if (view === "flavors") await refreshFlavors();
  else if (view === "keypairs") await refreshKeypairs();
  else if (view === "hosts") await refreshHosts();
}

// Servers live-update every POLL_MS (the hosts view too, while shown). A loop belongs to one
// login: an answer that arrives after a logout (or the next login) is dropped.
function startPolling() {
  stopPolling();
  const mine = session;
  const tick = async () => {
    if (session !== mine) return;
    pollInFlight = (async () => {
      if (view === "hosts") await refreshHosts();
      await refreshServers();
    })();
    try {
      await pollInFlight;
    } catch (err) {
      if (session === mine) failed("Refreshing")(err);
    }
    if (session === mine) pollTimer = setTimeout(tick, POLL_MS);
  };
  pollTimer = setTimeout(tick, POLL_MS);
}

function stopPolling() {
  if (pollTimer !== null) clearTimeout(pollTimer);
  pollTimer = null;
}

// --- servers --------------------------------------------------------------------------------

async function refreshChoices() {
  const mine = session;
  const [flavorBody, imageList, keypairBody] = await Promise.all([
    api.compute(mine, "GET", "flavors/detail"),
    api.listImages(mine),
    api.compute(mine, "GET", "os-keypairs"),
  ]);
  if (session !== mine) return;
  flavors = flavorBody.flavors;
  images = imageList;
  fillSelect(
    $("#create-flavor"),
    flavors.map((f) => ({ value: f.id, label: `${f.name} (${f.vcpus} vCPU, ${f.ram} MB, ${f.disk} GB)` })),
  );
  fillSelect(
    $("#create-image"),
    images.filter((i) => i.status === "active").map((i) => ({ value: i.id, label: i.name || i.id })),
  );
  fillKeypairs(keypairBody.keypairs.map((k) => k.keypair));
  // Rows drawn before the images were known show image ids: name them now.
  serverRows.forEach((entry) => updateServerRow(entry, entry.row.server));
}

function fillKeypairs(keypairs) {
  fillSelect(
    $("#create-keypair"),
    keypairs.map((k) => ({ value: k.name, label: k.name })),
    { placeholder: "(none)" },
  );
}

function imageName(server) {
  if (!server.image || !server.image.id) return "(volume)";
  const found = images.find((i) => i.id === server.image.id);
  return found ? found.name : server.image.id;
}

function addresses(server) {
  return Object.entries(server.addresses || {})
    .map(([net, list]) => `${net}: ${list.map((a) => a.addr).join(", ")}`)
    .join("; ");
}

const ACTIONS = [
  { name: "start", label: "Start", when: (s) => s.status === "SHUTOFF", run: (s) => act(s, { "os-start": null }) },
  { name: "stop", label: "Stop", when: (s) => s.status === "ACTIVE", run: (s) => act(s, { "os-stop": null }) },
  {
    name: "reboot",
    label: "Reboot",
    when: (s) => s.status === "ACTIVE",
    run: (s) => act(s, { reboot: { type: "SOFT" } }),
  },
  { name: "console", label: "Console", when: (s) => s.status === "ACTIVE", run: (s) => openConsole(s) },
  {
    name: "log",
    label: "Log",
    when: (s) => ["ACTIVE", "SHUTOFF", "REBOOT", "ERROR"].includes(s.status),
    run: (s) => showConsoleLog(s),
  },
  { name: "delete", label: "Delete", when: () => true, run: (s) => deleteServer(s) },
];

function makeServerRow(server) {
  const cells = {};
  const tr = h("tr", { "data-id": server.id });
  for (const name of ["name", "status", "task", "power", "flavor", "image", "addresses", "host"]) {
    cells[name] = h("td", { class: `col-${name}` });
    if (name === "host" && !session.isAdmin) continue;
    tr.append(cells[name]);
  }
  const buttons = {};
  if (session.canWrite) {
    const td = h("td", { class: "actions" });
    const row = { server };
    for (const action of ACTIONS) {
      buttons[action.name] = h(
        "button",
        { type: "button", "data-action": action.name, onclick: () => action.run(row.server) },
        action.label,
      );
      td.append(buttons[action.name]);
    }
    tr.append(td);
    return { tr, cells, buttons, row };
  }
  return { tr, cells, buttons, row: { server } };
}

function updateServerRow(entry, server) {
  entry.row.server = server;
  const { cells } = entry;
  setText(cells.name, server.name);
  setText(cells.status, server.status);
  cells.status.className = `col-status status-${String(server.status).toLowerCase()}`;
  if (server.fault && server.fault.message) cells.status.title = server.fault.message; // why it is ERROR
  else cells.status.removeAttribute("title");
  setText(cells.task, server["OS-EXT-STS:task_state"] || "");
  setText(cells.power, POWER_STATES[server["OS-EXT-STS:power_state"]] || "");
  setText(cells.flavor, server.flavor ? server.flavor.original_name || server.flavor.id : "");
  setText(cells.image, imageName(server));
  setText(cells.addresses, addresses(server));
  setText(cells.host, server["OS-EXT-SRV-ATTR:host"] || "");
  const busy = Boolean(server["OS-EXT-STS:task_state"]);
  for (const action of ACTIONS) {
    const button = entry.buttons[action.name];
    if (button) button.disabled = (busy && action.name !== "delete") || !action.when(server);
  }
}

async function refreshServers() {
  const mine = session;
  const body = await api.compute(mine, "GET", "servers/detail");
  if (session !== mine) return;
  const tbody = $("#servers tbody");
  const seen = new Set();
  let previous = null;
  for (const server of body.servers) {
    seen.add(server.id);
    let entry = serverRows.get(server.id);
    if (!entry) {
      entry = makeServerRow(server);
      serverRows.set(server.id, entry);
      if (previous) previous.after(entry.tr);
      else tbody.prepend(entry.tr);
    }
    updateServerRow(entry, server);
    previous = entry.tr;
  }
  for (const [id, entry] of serverRows) {
    if (!seen.has(id)) {
      entry.tr.remove();
      serverRows.delete(id);
      if (logServer && logServer.id === id) closeConsoleLog();
    }
  }
  $("#servers-empty").hidden = serverRows.size > 0;
}

async function createServer(event) {
  event.preventDefault();
  const name = $("#create-name").value.trim();
  const server = {
    name,
    flavorRef: $("#create-flavor").value,
    imageRef: $("#create-image").value,
    networks: $("#create-network").value,
  };
  const keyName = $("#create-keypair").value;
  if (keyName) server.key_name = keyName;
  const button = $("#create-submit");
  button.disabled = true;
  try {
    await api.compute(session, "POST", "servers", { server });
    say(`Creating server ${name}.`);
    $("#create-name").value = "";
    await refreshServers();
  } catch (err) {
    failed(`Creating server ${name}`)(err);
  } finally {
    button.disabled = false;
  }
}

async function act(server, action) {
  const [name] = Object.keys(action);
  try {
    await api.serverAction(session, server.id, action);
    say(`${name} requested for ${server.name}.`);
    await refreshServers();
  } catch (err) {
    failed(`${name} of ${server.name}`)(err);
  }
}

async function deleteServer(server) {
  if (!window.confirm(`Delete server ${server.name}?`)) return;
  try {
    await api.compute(session, "DELETE", `servers/${encodeURIComponent(server.id)}`);
    say(`Deleting server ${server.name}.`);
    await refreshServers();
  } catch (err) {
    failed(`Deleting ${server.name}`)(err);
  }
}

// The console page opens in a new tab. The tab is opened at the click (a popup opened later,
// after the API answered, would be blocked) and cut from this page (no window.opener) before
// it is sent to the console proxy's URL.
async function openConsole(server) {
  const tab = window.open("", "_blank");
  if (tab) tab.opener = null;
  try {
    const body = await api.compute(session, "POST", `servers/${encodeURIComponent(server.id)}/remote-consoles`, {
      remote_console: { protocol: "vnc", type: "novnc" },
    });
    const url = new URL(body.remote_console.url, document.baseURI);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`unexpected console URL ${url}`);
    if (tab) tab.location.href = url.href;
    else window.open(url.href, "_blank", "noopener");
    say(`Console of ${server.name} opened in a new tab.`);
  } catch (err) {
    if (tab) tab.close();
    failed(`Opening the console of ${server.name}`)(err);
  }
}

async function showConsoleLog(server) {
  logServer = server;
  $("#console-log").hidden = false;
  setText($("#console-log-title"), `Console log of ${server.name}`);
  try {
    const body = await api.serverAction(session, server.id, { "os-getConsoleOutput": { length: 200 } });
    if (logServer === server) setText($("#console-output"), body.output);
  } catch (err) {
    failed(`Reading the console log of ${server.name}`)(err);
  }
}

function closeConsoleLog() {
  logServer = null;
  $("#console-log").hidden = true;
  setText($("#console-output"), "");
}

// --- images, flavors, key pairs -------------------------------------------------------------

async function refreshImages() {
  const mine = session;
  const list = await api.listImages(mine);
  if (session !== mine) return;
  images = list;
  const tbody = clear($("#images tbody"));
  for (const image of images) {
    const mayDelete = session.canWrite && (session.isAdmin || image.owner === session.project.id);
    const actions = h("td", { class: "actions" });
    if (mayDelete) {
      actions.append(h("button", { type: "button", "data-action": "delete", onclick: () => deleteImage(image) }, "Delete"));
    }
    tbody.append(
      h(
        "tr",
        { "data-id": image.id },
        h("td", {}, image.name || image.id),
        h("td", {}, image.status),
        h("td", {}, image.visibility),
        h("td", {}, image.disk_format || ""),
        h("td", {}, bytes(image.size)),
        session.canWrite ? actions : null,
      ),
    );
  }
}

async function uploadImage(event) {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  const name = $("#upload-name").value.trim() || (file && file.name);
  if (!file) return;
  const button = $("#upload-submit");
  button.disabled = true;
  say(`Uploading ${name} (${bytes(file.size)})...`);
  try {
    await api.uploadImage(session, {
      name,
      diskFormat: $("#upload-format").value,
      visibility: $("#upload-visibility").value,
      file,
    });
    say(`Image ${name} uploaded.`);
    $("#image-upload").reset();
    await refreshImages();
    await refreshChoices();
  } catch (err) {
    failed(`Uploading ${name}`)(err);
  } finally {
    button.disabled = false;
  }
}

async function deleteImage(image) {
  if (!window.confirm(`Delete image ${image.name}?`)) return;
  try {
    await api.image(session, "DELETE", `images/${encodeURIComponent(image.id)}`);
    say(`Image ${image.name} deleted.`);
    await refreshImages();
  } catch (err) {
    failed(`Deleting image ${image.name}`)(err);
  }
}

async function refreshFlavors() {
  const mine = session;
  const body = await api.compute(mine, "GET", "flavors/detail");
  if (session !== mine) return;
  flavors = body.flavors;
  const tbody = clear($("#flavors tbody"));
  for (const f of flavors) {
    tbody.append(
      h(
        "tr",
        { "data-id": f.id },
        h("td", {}, f.name),
        h("td", {}, f.vcpus),
        h("td", {}, `${f.ram} MB`),
        h("td", {}, `${f.disk} GB`),
        h("td", {}, `${f["OS-FLV-EXT-DATA:ephemeral"] || 0} GB`),
        h("td", {}, f["os-flavor-access:is_public"] === false ? "no" : "yes"),
      ),
    );
  }
}

async function refreshKeypairs() {
  const mine = session;
  const body = await api.compute(mine, "GET", "os-keypairs");
  if (session !== mine) return;
  const keypairs = body.keypairs.map((k) => k.keypair);
  fillKeypairs(keypairs);
  const tbody = clear($("#keypairs tbody"));
  for (const k of keypairs) {
    tbody.append(
      h(
        "tr",
        { "data-name": k.name },
        h("td", {}, k.name),
        h("td", {}, k.type || "ssh"),
        h("td", { class: "mono" }, k.fingerprint),
        h(
          "td",
          { class: "actions" },
          h("button", { type: "button", "data-action": "delete", onclick: () => deleteKeypair(k) }, "Delete"),
        ),
      ),
    );
  }
}

async function createKeypair(event) {
  event.preventDefault();
  const name = $("#keypair-name").value.trim();
  try {
    await api.compute(session, "POST", "os-keypairs", {
      keypair: { name, public_key: $("#keypair-key").value.trim() },
    });
    say(`Key pair ${name} imported.`);
    $("#keypair-create").reset();
    await refreshKeypairs();
  } catch (err) {
    failed(`Importing key pair ${name}`)(err);
  }
}

async function deleteKeypair(keypair) {
  if (!window.confirm(`Delete key pair ${keypair.name}?`)) return;
  try {
    await api.compute(session, "DELETE", `os-keypairs/${encodeURIComponent(keypair.name)}`);
    say(`Key pair ${keypair.name} deleted.`);
    await refreshKeypairs();
  } catch (err) {
    failed(`Deleting key pair ${keypair.name}`)(err);
  }
}

// --- hosts (admins) -------------------------------------------------------------------------

function usage(used, total, unit) {
  return h(
    "td",
    { class: "usage" },
    h("meter", { min: 0, max: total || 1, value: used, low: 0.7 * total, high: 0.9 * total, optimum: 0 }),
    h("span", { class: "usage-text" }, `${used} / ${total} ${unit}`),
  );
}

async function refreshHosts() {
  const mine = session;
  const [hypervisors, services] = await Promise.all([
    api.compute(mine, "GET", "os-hypervisors/detail"),
    api.compute(mine, "GET", "os-services"),
  ]);
  if (session !== mine) return;
  const hosts = clear($("#hosts tbody"));
  for (const hv of hypervisors.hypervisors) {
    hosts.append(
      h(
        "tr",
        { "data-host": hv.hypervisor_hostname },
        h("td", {}, hv.hypervisor_hostname),
        h("td", { class: `state-${hv.state}` }, hv.state),
        h("td", {}, hv.status),
        usage(hv.vcpus_used, hv.vcpus, "vCPU"),
        usage(hv.memory_mb_used, hv.memory_mb, "MB"),
        usage(hv.local_gb_used, hv.local_gb, "GB"),
        h("td", {}, hv.running_vms),
      ),
    );
  }
  const tbody = clear($("#services tbody"));
  for (const s of services.services) {
    tbody.append(
      h(
        "tr",
        { "data-id": s.id },
        h("td", {}, s.binary),
        h("td", {}, s.host),
        h("td", {}, s.zone),
        h("td", {}, s.status),
        h("td", { class: `state-${s.state}` }, s.state),
        h("td", {}, s.updated_at || ""),
        h("td", {}, s.disabled_reason || ""),
      ),
    );
  }
}

// --- start ----------------------------------------------------------------------------------

function start() {
  $("#login-form").addEventListener("submit", submitLogin);
  $("#logout").addEventListener("click", doLogout);
  $("#server-create").addEventListener("submit", createServer);
  $("#image-upload").addEventListener("submit", uploadImage);
  $("#keypair-create").addEventListener("submit", createKeypair);
  $("#console-log-refresh").addEventListener("click", () => logServer && showConsoleLog(logServer));
  $("#console-log-close").addEventListener("click", closeConsoleLog);
  document.querySelectorAll("#nav button").forEach((button) => {
    button.addEventListener("click", () => show(button.dataset.view));
  });
  api.whenUnauthorized((refused) => {
    if (refused !== session) return; // an answer to the previous login's call
    api.clearSession();
    showLogin("Your session has expired: log in again.");
  });
  session = api.loadSession();
  if (session) showApp();
  else showLogin();
}

start();
