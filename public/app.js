// The live alert feed page. Speaks version 1 of docs/websocket.md: it keeps the highest
// seq it has, resumes with `since` after any disconnect, and shows when alerts were
// missed and how it recovered. Rendering uses textContent only: every string in an
// alert comes from an agent.

const MAX_ROWS = 500; // DOM rows kept; older ones are removed (the feed stays smooth)
const HISTORY = 200; // alerts loaded on a first connection
const SEVERITY_RANK = { INFO: 0, WARN: 1, CRITICAL: 2 };

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
};

let lastSeq = null; // highest seq received: the resume cursor
let socket = null;
let attempt = 0;
let received = 0;
let heartbeatTimer = null;
let heartbeatMs = 15000;
const knownHosts = new Map(); // host_id -> hostname

function currentFilters() {
  const types = [...ui.form.querySelectorAll('input[name="tripwire_type"]:checked')].map(
    (i) => i.value,
  );
  return {
    min_severity: ui.minSeverity.value || null,
    host_ids: ui.host.value ? [ui.host.value] : null,
    tripwire_types: types.length === 3 ? null : types,
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

function showNotice(text) {
  ui.notice.hidden = false;
  ui.notice.textContent = `${new Date().toLocaleTimeString()}: ${text}`;
}

function feedUrl() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const f = currentFilters();
  if (lastSeq !== null) url.searchParams.set("since", String(lastSeq));
  else url.searchParams.set("history", String(HISTORY));
  if (f.min_severity) url.searchParams.set("min_severity", f.min_severity);
  if (f.host_ids) url.searchParams.set("host_id", f.host_ids.join(","));
  if (f.tripwire_types?.length) url.searchParams.set("tripwire_type", f.tripwire_types.join(","));
  if (token) url.searchParams.set("token", token);
  return url;
}

function connect() {
  setState(
    attempt === 0 ? "connecting" : "reconnecting",
    attempt === 0 ? "connecting" : "reconnecting…",
  );
  const resumeFrom = lastSeq;
  let replayed = 0;
  let replaying = true;
  const ws = new WebSocket(feedUrl(), ["tripwire.v1"]);
  socket = ws;
  ws.onopen = () => {
    attempt = 0;
    setState("replaying", "loading…");
    armHeartbeat(ws);
  };
  ws.onmessage = (event) => {
    armHeartbeat(ws);
    const msg = JSON.parse(event.data);
    switch (msg.type) {
      case "hello":
        if (typeof msg.heartbeat_ms === "number") heartbeatMs = msg.heartbeat_ms;
        break;
      case "alerts":
        if (replaying) replayed += msg.items.length;
        addAlerts(msg.items);
        break;
      case "live":
        replaying = false;
        setState("live", "live");
        if (resumeFrom !== null) {
          showNotice(
            `Reconnected: resumed from seq ${resumeFrom}, ${replayed} alert(s) caught up, none missed.`,
          );
        }
        break;
      case "dropped":
        showNotice(
          `This tab fell behind and missed ${msg.count} alert(s) (seq ${msg.from_seq}–${msg.to_seq}); recovering them…`,
        );
        // Resume from the last alert received before the gap.
        ws.close(4000, "resuming after a gap");
        break;
      case "reset":
        showNotice(
          `More alerts arrived while disconnected than can be replayed (from seq ${msg.missed_from_seq}); reloaded the latest ${HISTORY}.`,
        );
        lastSeq = null;
        clearRows();
        ws.close(4000, "reloading");
        break;
      case "filters":
      case "heartbeat":
        break;
      case "error":
        showNotice(`Server: ${msg.error}`);
        break;
    }
  };
  ws.onclose = (event) => {
    clearTimeout(heartbeatTimer);
    if (socket !== ws) return;
    socket = null;
    const delay = event.code === 4000 ? 0 : Math.min(10000, 250 * 2 ** attempt);
    attempt++;
    setState(
      "reconnecting",
      delay === 0 ? "resuming…" : `reconnecting in ${Math.ceil(delay / 1000)} s`,
    );
    setTimeout(connect, delay);
  };
}

function armHeartbeat(ws) {
  clearTimeout(heartbeatTimer);
  // Two silent heartbeat intervals: the connection is dead even if the browser has not noticed.
  heartbeatTimer = setTimeout(
    () => {
      setState("offline", "no heartbeat — reconnecting");
      ws.close();
    },
    heartbeatMs * 2 + 1000,
  );
}

function addAlerts(items) {
  const f = currentFilters();
  const frag = document.createDocumentFragment();
  for (const alert of items) {
    if (lastSeq !== null && alert.seq <= lastSeq) continue; // never show one twice
    lastSeq = alert.seq;
    received++;
    if (!knownHosts.has(alert.host_id)) addHost(alert.host_id, alert.hostname);
    const row = renderRow(alert);
    row.hidden = !matches(alert, f);
    frag.prepend(row);
  }
  ui.rows.prepend(frag);
  while (ui.rows.querySelectorAll("tr.alert").length > MAX_ROWS) {
    const oldest = ui.rows.querySelector("tr.alert:last-of-type");
    if (oldest?.nextElementSibling?.classList.contains("detail"))
      oldest.nextElementSibling.remove();
    oldest?.remove();
  }
  ui.empty.hidden = ui.rows.children.length > 0;
  ui.counts.textContent = `${received} received · showing newest ${Math.min(received, MAX_ROWS)}`;
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
  const cells = [
    sev,
    new Date(alert.timestamp).toLocaleString(),
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
}

function addHost(hostId, hostname) {
  knownHosts.set(hostId, hostname);
  const option = document.createElement("option");
  option.value = hostId;
  option.textContent = hostname;
  ui.host.append(option);
}

function clearRows() {
  ui.rows.replaceChildren();
  ui.empty.hidden = false;
}

ui.form.addEventListener("change", () => {
  const f = currentFilters();
  for (const tr of ui.rows.querySelectorAll("tr.alert")) {
    tr.hidden = !matches(
      { severity: tr.dataset.severity, tripwire_type: tr.dataset.type, host_id: tr.dataset.hostId },
      f,
    );
    if (tr.hidden && tr.nextElementSibling?.classList.contains("detail"))
      tr.nextElementSibling.remove();
  }
  if (socket?.readyState === WebSocket.OPEN)
    socket.send(JSON.stringify({ type: "set_filters", ...f }));
});
ui.form.addEventListener("submit", (e) => e.preventDefault());

connect();
