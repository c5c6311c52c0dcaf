// worker/ui/app.js — the dashboard: polls /api every 2 s and renders with textContent
// only (job ids, error messages and event data are data, never markup). Actions send
// the token from the field above as "Authorization: Bearer ..." with a JSON body; it is
// kept in sessionStorage (this tab only), never in a cookie. Endpoints:
// docs/operations.md "Dashboard and /api".
"use strict";

const state = { cfg: null, timer: null };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function fill(tableId, rows, cols, emptyText) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (!rows.length) {
    const td = el("td", emptyText, "empty");
    td.colSpan = cols;
    body.appendChild(row([td]));
    return;
  }
  for (const r of rows) body.appendChild(r);
}

function say(text, ok) {
  const m = $("msg");
  m.textContent = text;
  m.className = ok ? "ok" : "error";
}

function token() { return sessionStorage.getItem("snapworker-token") || ""; }

function age(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function when(ts) { return ts ? new Date(ts).toLocaleTimeString() : ""; }

function jobLink(id) {
  const td = el("td", null, "mono");
  if (!id) { td.textContent = "?"; return td; }
  const a = el("a", id);
  a.href = "#/job/" + encodeURIComponent(id);
  td.appendChild(a);
  return td;
}

function num(v) { return el("td", v === undefined || v === null ? "" : v, "num"); }

async function getJSON(path) {
  const r = await fetch(path, { headers: { "Accept": "application/json" }, cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

async function act(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body), cache: "no-store" });
  const out = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(out.error || ("HTTP " + r.status));
  return out;
}

function progressCell(p) {
  const td = el("td");
  if (!p) { td.textContent = "–"; return td; }
  const parts = [];
  if (p.bytes !== undefined) parts.push(p.bytes + " bytes");
  if (p.entries !== undefined) parts.push(p.entries + " entries");
  if (p.total_bytes) {
    const bar = el("progress");
    bar.max = p.total_bytes; bar.value = Math.min(p.bytes || 0, p.total_bytes);
    td.appendChild(bar);
    td.appendChild(document.createTextNode(" "));
  }
  td.appendChild(el("span", parts.join(", ") || "started", "progress-text"));
  return td;
}

function renderQueues(q) {
  const rows = (q.queues || []).map(f => row([
    el("td", f.name, "mono"), num(f.depth),
    el("td", [f.streams.high, f.streams.default, f.streams.low].join(" / ")),
    num(f.pending), num(f.lag), num(f.delayed), num(f.dead),
    el("td", f.depth ? age(f.oldest_age_s * 1000) : "–"), num(f.throughput_1m), num(f.live_workers),
  ]));
  fill("queues", rows, 10, "no figures");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function renderRunning(l) {
  fill("running", l.jobs.map(j => row([
    jobLink(j.id), el("td", j.type), el("td", j.priority), num(j.attempt),
    el("td", j.worker, "mono"), progressCell(j.progress),
  ])), 6, "nothing running");
}

function renderFailures(l) {
  fill("failures", l.jobs.map(j => row([
    jobLink(j.id), el("td", j.type), el("td", j.status), num(j.attempt),
    el("td", j.error ? j.error.code : "", "mono"), el("td", j.error ? j.error.message : "", "err"),
    el("td", when(j.ts)),
  ])), 7, "no recent failures");
}

function actionButton(label, fn) {
  const b = el("button", label, "action");
  b.type = "button";
  b.disabled = !state.cfg || !state.cfg.actions;
  b.addEventListener("click", fn);
  return b;
}

function renderDead(l) {
  fill("dead", l.jobs.map(j => {
    const td = el("td");
    td.appendChild(actionButton("requeue", () => doAction("/api/dead/requeue", { id: j.dead_id }, "requeued " + j.dead_id)));
    td.appendChild(actionButton("purge", () => doAction("/api/dead/purge", { id: j.dead_id }, "purged " + j.dead_id)));
    const tr = row([
      el("td", j.dead_id, "mono"), jobLink(j.id), el("td", j.type), num(j.attempt),
      el("td", j.error ? j.error.code : "", "mono"), el("td", j.error ? j.error.message : "", "err"), td,
    ]);
    tr.dataset.deadId = j.dead_id;
    return tr;
  }), 7, "no dead jobs");
  $("purge-all").disabled = !state.cfg || !state.cfg.actions;
}

async function doAction(path, body, okText) {
  try {
    await act(path, body);
    say(okText, true);
  } catch (e) {
    say("refused: " + e.message, false);
  }
  refresh();
}

async function refreshOverview() {
  const [q, run, fail, dead] = await Promise.all([
    getJSON("/api/queues"), getJSON("/api/jobs?state=running&limit=50"),
    getJSON("/api/jobs?state=failed&limit=20"), getJSON("/api/jobs?state=dead&limit=50"),
  ]);
  renderQueues(q); renderRunning(run); renderFailures(fail); renderDead(dead);
}

async function refreshJob(id) {
  const j = await getJSON("/api/job?id=" + encodeURIComponent(id));
  $("job-id").textContent = id;
  const rows = [];
  if (j.job) {
    for (const [k, v] of Object.entries(j.job)) {
      rows.push(row([el("th", k), el("td", typeof v === "object" ? JSON.stringify(v) : v, k === "error" ? "err" : "mono")]));
    }
  }
  fill("job-fields", rows, 2, "no job hash (unknown, or expired after its TTL)");
  fill("job-events", j.events.map(e => row([
    el("td", when(e.ts)), el("td", e.status), num(e.attempt), el("td", e.worker, "mono"),
    el("td", JSON.stringify(e.data), e.status === "failed" || e.status === "dead" ? "err" : "mono"),
  ])), 5, "no events");
}

async function refresh() {
  const m = location.hash.match(/^#\/job\/(.+)$/);
  $("overview").hidden = !!m;
  $("jobview").hidden = !m;
  try {
    if (m) await refreshJob(decodeURIComponent(m[1]));
    else await refreshOverview();
    document.body.dataset.loaded = "1";
  } catch (e) {
    say("cannot load: " + e.message, false);
  }
}

function showMode() {
  $("mode").textContent = !state.cfg ? "" :
    !state.cfg.actions ? "read-only (no SNAPWORKER_HTTP_TOKEN on the worker)" :
    token() ? "actions enabled (token set)" : "actions need the token";
}

async function start() {
  try {
    state.cfg = await getJSON("/api/config");
    $("queue-name").textContent = state.cfg.queue;
    $("version").textContent = "v" + state.cfg.version;
  } catch (e) {
    say("cannot load: " + e.message, false);
  }
  $("token").value = token();
  $("token-form").addEventListener("submit", ev => {
    ev.preventDefault();
    sessionStorage.setItem("snapworker-token", $("token").value);
    showMode();
  });
  $("purge-all").addEventListener("click", () => {
    if (confirm("Delete every dead entry?")) doAction("/api/dead/purge", {}, "dead list purged");
  });
  window.addEventListener("hashchange", refresh);
  showMode();
  await refresh();
  state.timer = setInterval(refresh, (state.cfg && state.cfg.poll_ms) || 2000);
}

document.addEventListener("DOMContentLoaded", start);
