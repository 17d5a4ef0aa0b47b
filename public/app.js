// The live alert feed page. Loads the newest alerts from GET /api/alerts, then speaks
// version 1 of docs/websocket.md from that page's seq on: it keeps the highest seq it has,
// resumes with `since` after any disconnect, and shows when alerts were missed and how it
// recovered. Older pages come from the API with `before`. Rendering uses textContent
// only: every string in an alert comes from an agent.

import { createHostsPanel } from "./hosts.js";

const MAX_ROWS = 500; // alert rows kept in the DOM
const HISTORY = 200; // alerts loaded first (and after a reload)
const OLDER_PAGE = 100; // alerts per "Older alerts" click
const SEVERITY_RANK = { INFO: 0, WARN: 1, CRITICAL: 2 };
const TYPE_COUNT = 3;

const params = new URLSearchParams(location.search);
const token = params.get("token");

const ui = {
  state: document.getElementById("state"),
  notice: document.getElementById("notice"),
  rows: document.getElementById("alerts"),
  empty: document.getElementById("empty"),
  counts: document.getElementById("counts"),
  minSeverity: document.getElementById("min-severity"),
  host: document.getElementById("host"),
  form: document.getElementById("filters"),
  older: document.getElementById("older"),
  olderStatus: document.getElementById("older-status"),
  latest: document.getElementById("latest"),
};

const hostsPanel = createHostsPanel({
  list: document.getElementById("hosts"),
  summary: document.getElementById("hosts-summary"),
  empty: document.getElementById("hosts-empty"),
  token,
});

let lastSeq = null; // highest seq received: the resume cursor (null: load from the API)
let nextBefore = null; // cursor of the next older page (null: no older alerts)
let loadingOlder = false;
let generation = 0; // bumped by each connect(), so a superseded one stops after its await
// True once older pages pushed the newest rows out: live alerts are then counted, not
// shown, until "Back to latest" reloads.
let browsing = false;
let newerHidden = 0;
let socket = null;
let attempt = 0; // failed connections in a row, for the backoff
let received = 0;
let rowCount = 0; // tr.alert rows in the table (detail rows excluded)
let heartbeatTimer;
let reconnectTimer;
let heartbeatMs = 15000;
// Why the next connection resumes, for the notice once it is live again.
let resumeReason = null;
const knownHosts = new Map(); // host_id -> hostname

function currentFilters() {
  const types = [...ui.form.querySelectorAll('input[name="tripwire_type"]:checked')].map(
    (i) => i.value,
  );
  return {
    min_severity: ui.minSeverity.value || null,
    host_ids: ui.host.value ? [ui.host.value] : null,
    tripwire_types: types.length === TYPE_COUNT ? null : types,
  };
}

function matches(alert, f) {
  if (f.min_severity && SEVERITY_RANK[alert.severity] < SEVERITY_RANK[f.min_severity]) return false;
  if (f.host_ids && !f.host_ids.includes(alert.host_id)) return false;
  if (f.tripwire_types && !f.tripwire_types.includes(alert.tripwire_type)) return false;
  return true;
}

function setState(state, text) {
  ui.state.dataset.state = state;
  ui.state.textContent = text ?? state;
}

/** kind: dropped | resumed | recovered | reset | error (styles the notice). */
function showNotice(kind, text) {
  ui.notice.hidden = false;
  ui.notice.dataset.kind = kind;
  ui.notice.textContent = `${new Date().toLocaleTimeString()}: ${text}`;
}

function feedUrl(f) {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("since", String(lastSeq));
  if (f.min_severity) url.searchParams.set("min_severity", f.min_severity);
  if (f.host_ids) url.searchParams.set("host_id", f.host_ids.join(","));
  if (f.tripwire_types) url.searchParams.set("tripwire_type", f.tripwire_types.join(","));
  if (token) url.searchParams.set("token", token);
  return url;
}

/** GET /api/alerts with `params` and the filters `f`; throws with the server's error. */
async function fetchAlerts(params, f) {
  const url = new URL("/api/alerts", location.href);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
  if (f.min_severity) url.searchParams.set("min_severity", f.min_severity);
  if (f.host_ids) url.searchParams.set("host_id", f.host_ids.join(","));
  if (f.tripwire_types) url.searchParams.set("tripwire_type", f.tripwire_types.join(","));
  const res = await fetch(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ?? `HTTP ${res.status}`);
  return body;
}

/**
 * Shows the newest page from the API; the feed then resumes after it. `latest_seq` covers
 * every alert the page could have held, so nothing between the page and the feed is lost.
 */
function showLatest(page) {
  addAlerts([...page.alerts].reverse());
  lastSeq = Math.max(lastSeq ?? 0, page.latest_seq);
  nextBefore = page.next_before;
  updateOlder();
}

async function connect() {
  reconnectTimer = undefined;
  const gen = ++generation;
  const first = lastSeq === null;
  if (resumeReason === null && first) setState("connecting", "connecting");
  else setState("reconnecting", "reconnecting…");
  if (first) {
    let page;
    try {
      page = await fetchAlerts({ limit: HISTORY }, currentFilters());
    } catch (err) {
      if (gen !== generation) return;
      showNotice("error", `Could not load alerts: ${err.message}`);
      retryLater();
      return;
    }
    if (gen !== generation) return;
    showLatest(page);
  }
  // A first load is not a resume: no "resumed" notice for it.
  const resumeFrom = first ? null : lastSeq;
  const reason = first ? null : resumeReason;
  let replayed = 0;
  let replaying = true;
  const filters = currentFilters();
  const ws = new WebSocket(feedUrl(filters), ["tripwire.v1"]);
  socket = ws;
  ws.onopen = () => {
    attempt = 0;
    setState("replaying", "loading…");
    armHeartbeat(ws);
    // The filters changed while this connection was opening: the URL has the old ones.
    const now = currentFilters();
    if (JSON.stringify(now) !== JSON.stringify(filters)) sendFilters(now);
  };
  ws.onmessage = (event) => {
    armHeartbeat(ws);
    const msg = JSON.parse(event.data);
    switch (msg.type) {
      case "hello":
        if (typeof msg.heartbeat_ms === "number") heartbeatMs = msg.heartbeat_ms;
        // Statuses may have changed while disconnected; host_status messages follow.
        void hostsPanel.load();
        break;
      case "host_status":
        hostsPanel.apply(msg.data);
        break;
      case "alerts":
        if (replaying) replayed += msg.items.length;
        addAlerts(msg.items);
        break;
      case "live":
        replaying = false;
        resumeReason = null;
        setState("live", "live");
        if (reason?.kind === "dropped") {
          showNotice(
            "recovered",
            `Recovered after falling behind: ${replayed} alert(s) caught up from seq ${resumeFrom ?? 0}, none missed.`,
          );
        } else if (resumeFrom !== null) {
          showNotice(
            "resumed",
            `Reconnected: resumed from seq ${resumeFrom}, ${replayed} alert(s) caught up, none missed.`,
          );
        }
        break;
      case "dropped":
        showNotice(
          "dropped",
          `This tab fell behind and missed ${msg.count} alert(s) (seq ${msg.from_seq}–${msg.to_seq}); recovering them…`,
        );
        // Everything received so far comes before the gap: resume from it.
        resumeReason = { kind: "dropped" };
        abandon(ws, "recovering…");
        break;
      case "reset":
        showNotice(
          "reset",
          msg.reason === "replay_limit"
            ? `More alerts arrived while disconnected than can be replayed (from seq ${msg.missed_from_seq}); reloaded the latest ${HISTORY}.`
            : `The server's feed starts over (it is at seq ${msg.seq}, this page was at ${resumeFrom}); reloaded the latest ${HISTORY}.`,
        );
        resumeReason = null;
        reloadLatest();
        break;
      case "error":
        showNotice("error", `Server: ${msg.error}`);
        break;
      // "filters" and "heartbeat" need nothing beyond re-arming the heartbeat timer.
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    resumeReason ??= { kind: "lost" };
    retryLater();
  };
}

function retryLater() {
  // Jittered exponential backoff, so a restarted server is not hit by every tab at once.
  const delay = Math.round(Math.min(10000, 250 * 2 ** attempt) * (0.75 + Math.random() * 0.5));
  attempt++;
  setState("reconnecting", `reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`);
  scheduleConnect(delay);
}

/** Leaves a connection at once (no waiting for its close handshake) and opens the next. */
function abandon(ws, text) {
  ws.onmessage = null;
  ws.onclose = null;
  ws.close(4000, "resuming");
  setState("reconnecting", text);
  scheduleConnect(0);
}

function scheduleConnect(delay) {
  socket = null;
  clearTimeout(heartbeatTimer);
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(connect, delay);
}

function armHeartbeat(ws) {
  clearTimeout(heartbeatTimer);
  // The server may stay silent for up to two heartbeat intervals; three means it is gone,
  // even if the browser has not noticed (a dead TCP connection never closes by itself).
  heartbeatTimer = setTimeout(() => {
    resumeReason ??= { kind: "lost" };
    abandon(ws, "no heartbeat — reconnecting…");
  }, heartbeatMs * 3);
}

function sendFilters(f) {
  if (socket?.readyState === WebSocket.OPEN)
    socket.send(JSON.stringify({ type: "set_filters", ...f }));
}

/** Forgets every row and loads the newest page again (then the feed resumes after it). */
function reloadLatest() {
  lastSeq = null;
  clearRows();
  if (socket !== null) abandon(socket, "reloading…");
  else scheduleConnect(0);
}

function addAlerts(items) {
  if (browsing) {
    // Older pages fill the table: count what arrives instead of showing it.
    for (const alert of items) {
      if (lastSeq !== null && alert.seq <= lastSeq) continue;
      lastSeq = alert.seq;
      received++;
      newerHidden++;
      if (!knownHosts.has(alert.host_id)) addHost(alert.host_id, alert.hostname);
    }
    ui.latest.textContent = `Back to latest (${newerHidden} newer)`;
    updateSummary();
    return;
  }
  const f = currentFilters();
  const frag = document.createDocumentFragment();
  // Only the newest MAX_ROWS of a large batch (a replay page) can stay on screen.
  const renderFrom = items.length - MAX_ROWS;
  for (let i = 0; i < items.length; i++) {
    const alert = items[i];
    if (lastSeq !== null && alert.seq <= lastSeq) continue; // never show one twice
    lastSeq = alert.seq;
    received++;
    if (!knownHosts.has(alert.host_id)) addHost(alert.host_id, alert.hostname);
    if (i < renderFrom) continue;
    const row = renderRow(alert);
    row.hidden = !matches(alert, f);
    frag.prepend(row);
    rowCount++;
  }
  ui.rows.prepend(frag);
  // Detail rows follow their alert row, so trimming from the end takes both.
  let trimmed = false;
  while (rowCount > MAX_ROWS) {
    const last = ui.rows.lastElementChild;
    if (last === null) break;
    if (last.classList.contains("alert")) rowCount--;
    last.remove();
    trimmed = true;
  }
  if (trimmed) nextBefore = Number(ui.rows.lastElementChild?.dataset.seq ?? 0) || null;
  updateSummary();
  updateOlder();
}

/** Appends the next older page below the last row; past MAX_ROWS the newest rows go. */
async function loadOlder() {
  if (loadingOlder || nextBefore === null) return;
  loadingOlder = true;
  updateOlder();
  try {
    const page = await fetchAlerts({ before: nextBefore, limit: OLDER_PAGE }, currentFilters());
    const f = currentFilters();
    const frag = document.createDocumentFragment();
    for (const alert of page.alerts) {
      if (!knownHosts.has(alert.host_id)) addHost(alert.host_id, alert.hostname);
      const row = renderRow(alert);
      row.hidden = !matches(alert, f);
      frag.append(row);
      rowCount++;
    }
    ui.rows.append(frag);
    nextBefore = page.next_before;
    // Keep the DOM bounded: the newest rows make room, and live ones wait for "Back to latest".
    while (rowCount > MAX_ROWS) {
      const first = ui.rows.firstElementChild;
      if (first === null) break;
      const detail = first.nextElementSibling;
      if (detail?.classList.contains("detail")) detail.remove();
      first.remove();
      rowCount--;
      browsing = true;
    }
    if (browsing) {
      ui.latest.hidden = false;
      ui.latest.textContent = `Back to latest (${newerHidden} newer)`;
    }
  } catch (err) {
    showNotice("error", `Could not load older alerts: ${err.message}`);
  } finally {
    loadingOlder = false;
    updateSummary();
    updateOlder();
  }
}

function updateOlder() {
  ui.older.hidden = nextBefore === null;
  ui.older.disabled = loadingOlder;
  ui.olderStatus.textContent = loadingOlder
    ? "loading…"
    : nextBefore === null && rowCount > 0
      ? "No older alerts."
      : "";
}

function updateSummary() {
  const shown = ui.rows.querySelectorAll("tr.alert:not([hidden])").length;
  ui.empty.hidden = shown > 0;
  ui.empty.textContent = rowCount === 0 ? "No alerts yet." : "No alerts match the filters.";
  ui.counts.textContent = `${received} received · ${shown} shown`;
}

function renderRow(alert) {
  const tr = document.createElement("tr");
  tr.className = "alert";
  tr.dataset.seq = String(alert.seq);
  tr.dataset.severity = alert.severity;
  tr.dataset.type = alert.tripwire_type;
  tr.dataset.hostId = alert.host_id;
  const sev = document.createElement("span");
  sev.className = `sev sev-${alert.severity}`;
  sev.textContent = alert.severity;
  const time = document.createElement("time");
  time.dateTime = alert.timestamp;
  time.textContent = new Date(alert.timestamp).toLocaleString();
  const cells = [
    sev,
    time,
    alert.hostname,
    alert.tripwire_type,
    alert.rule_name,
    String(alert.seq),
  ];
  for (const value of cells) {
    const td = document.createElement("td");
    if (typeof value === "string") td.textContent = value;
    else td.append(value);
    tr.append(td);
  }
  tr.lastChild.className = "seq";
  tr.addEventListener("click", () => toggleDetail(tr, alert));
  return tr;
}

function toggleDetail(tr, alert) {
  const next = tr.nextElementSibling;
  if (next?.classList.contains("detail")) {
    next.remove();
    tr.classList.remove("open");
    return;
  }
  const detail = document.createElement("tr");
  detail.className = "detail";
  const td = document.createElement("td");
  td.colSpan = 6;
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(
    {
      alert_id: alert.alert_id,
      host_id: alert.host_id,
      received_at: alert.received_at,
      event_detail: alert.event_detail,
    },
    null,
    2,
  );
  td.append(pre);
  detail.append(td);
  tr.after(detail);
  tr.classList.add("open");
}

function addHost(hostId, hostname) {
  knownHosts.set(hostId, hostname);
  const option = document.createElement("option");
  option.value = hostId;
  option.textContent = hostname;
  // Keep the list sorted by hostname (after "all hosts").
  const after = [...ui.host.options]
    .slice(1)
    .find((o) => o.textContent.localeCompare(hostname) > 0);
  ui.host.insertBefore(option, after ?? null);
}

function clearRows() {
  ui.rows.replaceChildren();
  rowCount = 0;
  nextBefore = null;
  browsing = false;
  newerHidden = 0;
  ui.latest.hidden = true;
  updateSummary();
  updateOlder();
}

ui.form.addEventListener("change", (event) => {
  // No type at all cannot be asked for in the URL: keep at least one.
  if (event.target.name === "tripwire_type" && currentFilters().tripwire_types?.length === 0) {
    event.target.checked = true;
    return;
  }
  const f = currentFilters();
  for (const tr of ui.rows.querySelectorAll("tr.alert")) {
    tr.hidden = !matches(
      { severity: tr.dataset.severity, tripwire_type: tr.dataset.type, host_id: tr.dataset.hostId },
      f,
    );
    if (tr.hidden && tr.nextElementSibling?.classList.contains("detail")) {
      tr.nextElementSibling.remove();
      tr.classList.remove("open");
    }
  }
  updateSummary();
  sendFilters(f);
});
ui.form.addEventListener("submit", (e) => e.preventDefault());
ui.older.addEventListener("click", () => void loadOlder());
ui.latest.addEventListener("click", () => reloadLatest());

connect();
