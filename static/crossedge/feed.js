// Live feed: backfill on open, then new rows on top. Every value is set as text,
// never as HTML: process names, paths and container names come from the monitored hosts.
(function () {
  "use strict";
  const body = document.getElementById("feed-rows");
  const status = document.getElementById("feed-status");
  const empty = document.getElementById("feed-empty");
  const feed = body.dataset.feed;
  const MAX_ROWS = 500;
  const seen = new Set();
  let retry = 1000;

  const time = (iso) => new Date(iso).toISOString().replace("T", " ").slice(0, 19);
  const dest = (r) => (r.dest_ip.includes(":") ? `[${r.dest_ip}]` : r.dest_ip) + ":" + r.dest_port;
  const proc = (r) => `${r.comm} [${r.pid}]`;
  const container = (r) => (r.container ? r.container.name : "host");
  const pill = (text, cls) => ({ text, cls: "pill " + (cls || text) });
  const enforcement = (r) => (r.enforced ? " · refused by kernel" : r.audit ? " · audit only" : "");
  const columns = {
    connections: (r) => [time(r.ts), r.node, container(r), proc(r), dest(r),
      r.result === 0 ? "ok" : String(r.result), pill(r.verdict), r.rule_id || "—"],
    violations: (r) => [time(r.ts), r.node, container(r), proc(r), dest(r), r.rule_id,
      pill(r.action + enforcement(r), r.action), r.severity],
  }[feed];

  function add(rows) {
    for (const r of rows) {
      if (seen.has(r.id)) continue;
      seen.add(r.id);
      const tr = document.createElement("tr");
      for (const cell of columns(r)) {
        const td = document.createElement("td");
        if (typeof cell === "object") {
          const span = document.createElement("span");
          span.className = cell.cls;
          span.textContent = cell.text;
          td.appendChild(span);
        } else {
          td.textContent = cell;
        }
        tr.appendChild(td);
      }
      tr.dataset.id = r.id;
      body.insertBefore(tr, body.firstChild);
    }
    while (body.rows.length > MAX_ROWS) {
      seen.delete(Number(body.lastChild.dataset.id));
      body.removeChild(body.lastChild);
    }
    empty.hidden = body.rows.length > 0;
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws/feed/${feed}/`);
    ws.onopen = () => { status.textContent = "live"; status.className = "status live"; retry = 1000; };
    ws.onmessage = (msg) => {
      const data = JSON.parse(msg.data);
      // backfill comes newest first; live rows oldest first
      add(data.type === "backfill" ? data.rows.slice().reverse() : data.rows);
    };
    ws.onclose = (ev) => {
      status.className = "status down";
      if (ev.code === 4401) { status.textContent = "logged out"; return; }
      status.textContent = "reconnecting…";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    };
  }
  connect();
})();
