// The hosts panel: every registered host with its status. Loaded from GET /api/hosts
// each time the feed (re)connects, and kept current by `host_status` messages.
// Rendering uses textContent only: hostnames come from agents.

/**
 * Builds the panel over its elements. `token` (or null) is sent as a bearer header.
 * Returns `load()` (fetch the list) and `apply(data)` (one host_status message's data).
 */
export function createHostsPanel({ list, summary, empty, token }) {
  const rows = new Map(); // host_id -> li
  // host_status messages that arrived while a load was in flight: they may be newer than
  // the list it returns, so they are applied again on top of it.
  let arrivedDuringLoad = null;
  let loads = 0;

  function render(host) {
    let li = rows.get(host.host_id);
    if (li === undefined) {
      li = document.createElement("li");
      li.className = "host";
      li.dataset.hostId = host.host_id;
      const dot = document.createElement("span");
      dot.className = "dot";
      const name = document.createElement("span");
      name.className = "name";
      const status = document.createElement("span");
      status.className = "status";
      const seen = document.createElement("time");
      li.append(dot, name, status, seen);
      rows.set(host.host_id, li);
    }
    const [, name, status, seen] = li.children;
    name.textContent = host.hostname;
    li.dataset.hostname = host.hostname;
    li.dataset.status = host.status;
    status.textContent = host.status;
    if (host.last_seen) {
      seen.dateTime = host.last_seen;
      seen.textContent = `last seen ${new Date(host.last_seen).toLocaleString()}`;
    }
    place(li);
  }

  /** Keeps the list sorted by hostname. */
  function place(li) {
    const name = li.dataset.hostname;
    const before = [...list.children].find(
      (other) => other !== li && other.dataset.hostname.localeCompare(name) > 0,
    );
    if (li.nextElementSibling !== (before ?? null) || li.parentElement !== list) {
      list.insertBefore(li, before ?? null);
    }
    updateSummary();
  }

  function updateSummary() {
    const all = [...rows.values()];
    const online = all.filter((li) => li.dataset.status === "ONLINE").length;
    summary.textContent = `${online} online · ${all.length - online} offline`;
    empty.hidden = all.length > 0;
  }

  async function load() {
    const mine = ++loads;
    arrivedDuringLoad = [];
    try {
      const res = await fetch("/api/hosts", {
        headers: token ? { authorization: `Bearer ${token}` } : {},
        cache: "no-store",
      });
      const body = await res.json();
      if (!res.ok) throw new Error(body.error ?? `HTTP ${res.status}`);
      if (mine !== loads) return; // a newer load is on its way
      for (const host of body.hosts) render(host);
      for (const data of arrivedDuringLoad) render(data);
      updateSummary();
    } catch (err) {
      if (mine === loads) summary.textContent = `hosts unavailable: ${err.message}`;
    } finally {
      if (mine === loads) arrivedDuringLoad = null;
    }
  }

  function apply(data) {
    arrivedDuringLoad?.push(data);
    render(data);
  }

  return { load, apply };
}
