// Live feed: backfill on open, then new rows on top. Every value is set as text,
// never as HTML: process names, paths and container names come from the monitored hosts.
// The filter (the page's query string) goes to the server with the socket; a reconnect
// asks for every row after the newest one shown, so it leaves no gap and, with `seen`,
// no duplicate. Messages are numbered: a gap makes the page reconnect and say so.
(function () {
  "use strict";
  const body = document.getElementById("feed-rows");
  const status = document.getElementById("feed-status");
  const empty = document.getElementById("feed-empty");
  const notice = document.getElementById("feed-notice");
  const pauseButton = document.getElementById("feed-pause");
  const feed = body.dataset.feed;
  const filter = new URLSearchParams(location.search);
  const MAX_ROWS = 500;
  const seen = new Set();
  let retry = 1000, lastSeq = 0, maxId = 0, paused = false, held = [], socket = null;

  const time = (iso) => new Date(iso).toISOString().replace("T", " ").slice(0, 19);
  const dest = (r) => (r.dest_name ? r.dest_name + " · " : "") +  // the name the container resolved
    (r.dest_ip.includes(":") ? `[${r.dest_ip}]` : r.dest_ip) + ":" + r.dest_port +
    (r.dest_port_hi != null ? `–${r.dest_port_hi} · scan, new destinations` : "") +  // summed in the kernel
    (r.op === "sendmsg" ? " (udp sendto)" : r.op === "packet" ? " (raw/ICMP/SCTP packet)" : "") + (r.count > 1 ? ` ×${r.count}` : "");  // ×: folded in a storm
  const proc = (r) => `${r.comm} [${r.pid}]`;
  const short = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);
  const tail = (path, n) => (path.length > n ? "…" + path.slice(-(n - 1)) : path);  // a path's end says most
  // the file that ran (argv[0] is how it was called); "as …": the name it was run by, when another
  const binary = (r) => short([r.binary, ...r.args.slice(1)].join(" "), 48) + (r.cut ? " …" : "") +
    (r.fileless ? " (fileless)" : "") + (r.given ? ` · as ${tail(r.given, 32)}` : "") +
    (r.count > 1 ? ` ×${r.count}` : "");  // ×: folded in a storm
  const container = (r) => (r.container ? r.container.name : "host");
  const pill = (text, cls) => ({ text, cls: "pill " + (cls || text) });
  // null: seen by the kernel observer as the call began (a let-through call's outcome is not traced)
  const result = (r) => (r.result === null ? "—" : r.result === 0 ? "ok" : r.result === -1 ? "EPERM" : String(r.result));
  // A deny the kernel did not apply says so, with why: staff must never read "deny" for a call that went through.
  const enforcement = (r) => (r.enforced ? (r.kind === "connect" || r.kind === "scan" ? " · refused by kernel" :
    r.kind === "flood" ? " · dropped at XDP" : r.kind === "limit" ? " · held back by kernel" :
    r.kind === "dns" ? " · dropped by kernel" : r.kind === "socket" ? " · refused by kernel" : r.kind === "call" ? " · refused, killed" : ` · killed at ${r.kind}`) : r.audit ? " · audit only" :
    r.unenforced ? ` · NOT enforced: ${r.unenforced}` : "");
  const columns = {
    connections: (r) => [time(r.ts), r.node, container(r), proc(r), dest(r),
      result(r), pill(r.verdict + (r.unenforced ? " · NOT enforced" : ""), r.verdict), r.rule_id || "—"],
    processes: (r) => [time(r.ts), r.node, container(r), { href: `/processes/${r.id}/`, text: proc(r) }, r.kind,
      r.kind === "exit" ? `${r.exit} after ${r.lifetime_ms} ms` + (r.count > 1 ? ` ×${r.count}` : "") :
        r.kind === "open" ? `${tail(r.path, 40)} (${r.access}) → ${r.result}` + (r.count > 1 ? ` ×${r.count}` : "") :
        r.kind === "call" ? `${r.path}() refused` :
        r.kind === "socket" ? r.path + (r.result < 0 ? " → refused" : "") : binary(r),
      `${tail(r.parent_binary || r.parent_comm, 24)} [${r.ppid}]`,
      pill(r.verdict + (r.unenforced ? " · NOT enforced" : ""), r.verdict), r.rule_id || "—"],
    violations: (r) => [time(r.ts), r.node, r.kind === "flood" ? "— (ingress)" : container(r),
      r.process_id ? { href: `/processes/${r.process_id}/`, text: proc(r) } : r.pid === 0 && !r.comm ? "—" : proc(r),
      r.kind === "connect" ? dest(r) : r.kind === "scan" ? `scan: ${r.target}` :
        r.kind === "flood" ? `SYN flood: ${r.target}` : r.kind === "limit" ? `limit: ${r.target}` :
        r.kind === "dns" || r.kind === "socket" ? r.target : `${r.kind} ${r.target}`,
      r.rule_id, pill(r.action + enforcement(r), r.action), r.severity],
  }[feed];

  function say(text) { notice.textContent = text; notice.hidden = !text; }

  function render(rows) {
    for (const r of rows) {
      if (seen.has(r.id)) continue;
      seen.add(r.id);
      const tr = document.createElement("tr");
      for (const cell of columns(r)) {
        const td = document.createElement("td");
        if (typeof cell === "object" && cell.href) {
          const a = document.createElement("a");
          a.href = cell.href;
          a.textContent = cell.text;
          td.appendChild(a);
        } else if (typeof cell === "object") {
          const span = document.createElement("span");
          span.className = cell.cls;
          span.textContent = cell.text;
          td.appendChild(span);
        } else {
          td.textContent = cell;
          if (String(cell).length > 60) td.className = "wrap";  // a scan's or a flood's long target
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

  function add(rows) {  // rows arrive oldest first
    for (const r of rows) maxId = Math.max(maxId, r.id);
    if (paused) {
      held = held.concat(rows).slice(-MAX_ROWS);
      pauseButton.textContent = `Resume (${held.length} new)`;
    } else {
      render(rows);
    }
  }

  pauseButton.addEventListener("click", () => {
    paused = !paused;
    if (!paused) { render(held); held = []; }
    pauseButton.textContent = paused ? "Resume" : "Pause";
    status.textContent = paused ? "paused" : "live";
  });

  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams(filter);
    if (maxId) query.set("after", maxId);
    socket = new WebSocket(`${proto}://${location.host}/ws/feed/${feed}/?${query}`);
    lastSeq = 0;
    socket.onopen = () => { status.textContent = paused ? "paused" : "live"; status.className = "status live"; retry = 1000; };
    socket.onmessage = (msg) => {
      const data = JSON.parse(msg.data);
      if (data.seq !== lastSeq + 1) {  // a message went missing: start again from the last row shown
        say(`Missed ${data.seq - lastSeq - 1} update(s); resyncing from the database.`);
        socket.close(4000);
        return;
      }
      lastSeq = data.seq;
      if (data.type === "resync") say(`Resynced from the database: ${data.reason}.`);
      if (data.notice) say(`Caught up: ${data.notice}; older ones are in Search.`);
      add(data.rows);
    };
    socket.onclose = (ev) => {
      status.className = "status down";
      if (ev.code === 4401) { status.textContent = "signed out"; say("Your session ended: sign in again to resume."); return; }
      if (ev.code === 4400) { status.textContent = "bad filter"; return; }
      status.textContent = "reconnecting…";
      setTimeout(connect, ev.code === 4000 ? 0 : retry);
      retry = Math.min(retry * 2, 30000);
    };
  }
  connect();
})();
