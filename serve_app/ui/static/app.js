// The memory viewer: one page, plain DOM, hash routes (#/browse/USER/SESSION, #/memory/USER/ID,
// #/search, #/live, #/jobs, #/charts). Every call sends the API key kept in sessionStorage.
"use strict";

const KEY = "memserve.apiKey";
const $ = (sel) => document.querySelector(sel);
const state = { users: [], usersAfter: null, user: null, session: null, afterSeq: 0,
  highlight: new Set(), highlightIn: null, feedCursor: null, feedTimer: null, feedPaused: false, jobsTimer: null };

// --- HTTP ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, { method = "GET", body, key } = {}) {
  const headers = { Authorization: `Bearer ${key || sessionStorage.getItem(KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch { /* an empty or non-JSON body */ }
  if (!r.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(r.status, err.code || String(r.status), err.message || r.statusText);
  }
  return data;
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : "";
}

function enc(s) { return encodeURIComponent(s); }

// Errors of a view go to the status line; a refused key sends the reader back to sign in.
function fail(e) {
  if (e instanceof ApiError && e.status === 401) {
    sessionStorage.removeItem(KEY);
    showLogin("The API key was refused (401): sign in again.");
    return;
  }
  const msg = e instanceof ApiError ? `${e.status} ${e.code}: ${e.message}` : String(e);
  $("#status").textContent = msg;
}

// --- small DOM helpers ----------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "—");
const fmtNum = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString());
const fmtScore = (s) => (s === null || s === undefined ? "—" : Number(s).toFixed(3));
const badge = (text) => h("span", { class: `badge ${text}` }, text);

function chips(items) {
  return items && items.length ? items.map((x) => h("span", { class: "chip" }, String(x))) : "—";
}

// --- login ------------------------------------------------------------------------------------

function showLogin(message) {
  $("#nav").hidden = true;
  stopTimers();
  show("login");
  $("#login-error").textContent = message || "";
  $("#api-key").focus();
}

async function login(ev) {
  ev.preventDefault();
  const key = $("#api-key").value.trim();
  $("#login-error").textContent = "";
  try {
    await api("/v1/users?limit=1", { key });
  } catch (e) {
    $("#login-error").textContent = e instanceof ApiError && (e.status === 401 || e.status === 403)
      ? "That API key was not accepted." : `Could not sign in: ${e.message}`;
    $("#api-key").select();
    return;
  }
  sessionStorage.setItem(KEY, key);
  $("#api-key").value = "";
  $("#nav").hidden = false;
  if (!location.hash || location.hash === "#/login") location.hash = "#/browse";
  else route();
}

function logout() {
  sessionStorage.removeItem(KEY);
  location.hash = "#/login";
  showLogin("Signed out.");
}

// --- routing ----------------------------------------------------------------------------------

function show(view) {
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === view || (view === "memory" && a.dataset.view === "browse")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function stopTimers() {
  clearInterval(state.feedTimer); state.feedTimer = null;
  clearInterval(state.jobsTimer); state.jobsTimer = null;
}

async function route() {
  if (!sessionStorage.getItem(KEY)) { showLogin(); return; }
  $("#nav").hidden = false;
  $("#status").textContent = "";
  stopTimers();
  const [view, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    switch (view) {
      case "memory": show("memory"); await showMemory(args[0], args[1]); break;
      case "search": show("search"); await loadUserOptions(); break;
      case "live": show("live"); await loadUserOptions(); startFeed(); break;
      case "jobs": show("jobs"); await loadJobs(); state.jobsTimer = setInterval(() => loadJobs().catch(fail), 3000); break;
      case "charts": show("charts"); await loadUserOptions(); if ($("#chart-user").value) await drawCharts(); break;
      default: show("browse"); await browse(args[0], args[1]);
    }
  } catch (e) { fail(e); }
}

// --- browse: users -> sessions -> messages and memories ---------------------------------------

async function loadUsers(more = false) {
  const data = await api(`/v1/users${qs({ limit: 100, after: more ? state.usersAfter : null })}`);
  state.users = more ? state.users.concat(data.users) : data.users;
  state.usersAfter = data.next_after;
  return state.users;
}

async function loadUserOptions() {
  if (!state.users.length) await loadUsers();
  $("#user-options").replaceChildren(...state.users.map((u) => h("option", { value: u.user_id })));
  for (const id of ["#s-user", "#chart-user"]) if (!$(id).value && state.user) $(id).value = state.user;
}

function renderUsers() {
  $("#users").replaceChildren(...state.users.map((u) => h("li", { "aria-current": u.user_id === state.user ? "true" : null },
    h("a", { href: `#/browse/${enc(u.user_id)}` }, u.user_id),
    h("div", { class: "meta" }, `${fmtNum(u.sessions)} sessions · ${fmtNum(u.messages)} messages · ${fmtNum(u.memories)} memories`))));
  $("#users-more").hidden = !state.usersAfter;
}

async function browse(user, session) {
  await loadUsers();
  if (!user && state.users.length) user = state.users[0].user_id;
  state.user = user || null;
  renderUsers();
  $("#sessions tbody").replaceChildren();
  $("#messages").replaceChildren();
  $("#memories").replaceChildren();
  $("#removed").replaceChildren();
  if (!user) { $("#sessions-title").textContent = "Sessions (no users yet)"; return; }
  $("#sessions-title").textContent = `Sessions of ${user}`;
  const { sessions } = await api(`/v1/users/${enc(user)}/sessions`);
  if (!session && sessions.length) session = sessions[0].session_id;
  state.session = session || null;
  // Marked source messages belong to one session of one user.
  if (state.highlightIn !== `${user}/${session}`) state.highlight = new Set();
  $("#sessions tbody").replaceChildren(...sessions.map((s) => {
    const m = s.messages, t = s.tokens;
    return h("tr", { "aria-current": s.session_id === session ? "true" : null },
      h("td", {}, h("a", { href: `#/browse/${enc(user)}/${enc(s.session_id)}` }, s.session_id)),
      h("td", {}, fmtNum(m.received)), h("td", {}, fmtNum(m.processed)),
      h("td", {}, fmtNum(m.pending + m.buffered)), h("td", {}, m.failed ? badge(String(m.failed)) : "0"),
      h("td", {}, fmtNum(s.memories)), h("td", {}, fmtNum(t.raw)), h("td", {}, fmtNum(t.compressed)),
      h("td", {}, fmtNum(t.llm_input)), h("td", {}, fmtNum(t.llm_output)),
      h("td", {}, t.compression_ratio === null ? "—" : t.compression_ratio.toFixed(2)));
  }));
  if (session) await showSession(user, session);
  const { tombstones } = await api(`/v1/users/${enc(user)}/tombstones?limit=50`);
  $("#removed").replaceChildren(...(tombstones.length ? tombstones.map((t) => h("li", {},
    h("a", { href: `#/memory/${enc(user)}/${enc(t.id)}` }, t.entry.text || t.id),
    h("div", { class: "meta" }, `${t.action} · ${t.reason} · ${fmtTime(t.created_at)}`))) : [h("li", { class: "meta" }, "none")]));
}

async function showSession(user, session) {
  $("#messages-title").textContent = `Conversation ${session}`;
  state.afterSeq = -1;
  $("#messages").replaceChildren();
  await moreMessages(user, session);
  const { memories } = await api(`/v1/memories${qs({ user_id: user, session_id: session, limit: 500 })}`);
  $("#memories").replaceChildren(...memories.map((m) => memoryItem(user, m)));
  const first = document.querySelector(".conversation li.source");
  if (first) first.scrollIntoView({ block: "center" });
}

async function moreMessages(user, session) {
  const data = await api(`/v1/sessions/${enc(session)}/messages${qs({ user_id: user, after_seq: state.afterSeq, limit: 500 })}`);
  $("#messages").append(...data.messages.map(messageItem));
  state.afterSeq = data.next_after_seq ?? state.afterSeq;
  $("#messages-more").hidden = data.next_after_seq === null;
  $("#messages-more").onclick = () => moreMessages(user, session).catch(fail);
}

function messageItem(m) {
  const source = state.highlight.has(m.message_id);
  return h("li", { id: `msg-${m.message_id}`, class: source ? "source" : null, "data-message-id": m.message_id },
    h("div", {}, h("span", { class: "who" }, m.name || m.role), " ", h("span", { class: "meta" }, `#${m.seq} · ${fmtTime(m.timestamp)} · `), badge(m.status),
      source ? h("span", { class: "sr-only" }, " (source of the memory)") : null),
    h("div", {}, m.content),
    m.compressed ? h("div", { class: "meta" }, `compressed (${m.compressed_tokens}/${m.raw_tokens} tokens): ${m.compressed}`) : null,
    m.last_error ? h("div", { class: "error" }, m.last_error) : null);
}

function memoryItem(user, m) {
  return h("li", {},
    h("a", { href: `#/memory/${enc(user)}/${enc(m.id)}` }, m.memory),
    h("div", { class: "meta" }, `${m.kind} · ${fmtTime(m.timestamp)}${m.importance !== null ? ` · importance ${m.importance}` : ""}`));
}

// --- one memory: provenance, links, history ---------------------------------------------------

async function showMemory(user, id) {
  const d = await api(`/v1/memories/${enc(id)}/details${qs({ user_id: user })}`);
  const m = d.memory || (d.removed && d.removed.entry);
  $("#memory-title").textContent = d.memory ? "Memory" : "Removed memory";
  const md = (m && m.metadata) || {};
  const sourcesHref = `#/conversation/${enc(user)}/${enc(m.session_id)}/${enc(id)}`;
  const rows = [
    ["Text", m.memory || m.text],
    ["Kind", m.kind],
    ["Time", fmtTime(m.timestamp || m.ts)],
    ["Session", h("a", { href: `#/browse/${enc(user)}/${enc(m.session_id)}` }, m.session_id)],
    ["Speaker", m.speaker || "—"],
    ["Importance", m.importance ?? "—"],
    ["Keywords", chips(md.keywords)],
    ["Entities", chips(md.entities)],
    ["Written", fmtTime(m.created_at)],
    ["Source messages", d.sources.length
      ? h("ol", {}, d.sources.map((s) => h("li", {}, h("a", { href: sourcesHref, "data-source": s.message_id },
        `${s.name || s.role}: ${s.content}`))))
      : "—"],
    ["Links", d.links.length
      ? h("ul", {}, d.links.map((l) => h("li", {}, h("a", { href: `#/memory/${enc(user)}/${enc(l.memory.id)}` }, l.memory.memory),
        h("span", { class: "meta" }, ` — ${l.reason} (${fmtScore(l.link_score)})`))))
      : "—"],
    ["History", history(user, d)],
  ];
  $("#memory-detail").replaceChildren(
    h("dl", { class: "detail card" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("p", {}, h("a", { href: sourcesHref }, "Show the source messages in their conversation")));
  $("#memory-title").focus?.();
}

function history(user, d) {
  const items = [];
  for (const r of d.revisions) {
    items.push(h("li", {}, h("span", { class: "meta" }, `${fmtTime(r.created_at)} revised: `),
      h("del", {}, r.old_text), " → ", h("ins", {}, r.new_text),
      r.merged_ids.length ? h("span", { class: "meta" }, ` (merged ${r.merged_ids.length})`) : null));
  }
  for (const t of d.tombstones) {
    const removedSelf = d.removed && t.id === d.removed.id;
    items.push(h("li", {}, h("span", { class: "meta" }, `${fmtTime(t.created_at)} `), badge(t.action), " ",
      removedSelf ? "this memory was removed: " : `removed ${t.entry.text ? `“${t.entry.text}”` : t.id}: `,
      t.reason,
      t.superseded_by ? [" — superseded by ", h("a", { href: `#/memory/${enc(user)}/${enc(t.superseded_by)}` }, t.superseded_by)] : null));
  }
  return items.length ? h("ul", { class: "history" }, items) : "no revisions or tombstones";
}

// #/conversation/USER/SESSION/MEMORY: the session's conversation with the memory's sources marked.
async function showConversation(user, session, memoryId) {
  const d = await api(`/v1/memories/${enc(memoryId)}/details${qs({ user_id: user })}`);
  state.highlight = new Set(d.sources.map((s) => s.message_id));
  state.highlightIn = `${user}/${session}`;
  location.replace(`#/browse/${enc(user)}/${enc(session)}`);
}

// --- search playground ----------------------------------------------------------------------

function isoLocal(v) { return v ? new Date(v).toISOString() : null; }

async function search(ev) {
  ev.preventDefault();
  const f = ev.target.elements;
  const filters = {};
  if (f.session.value) filters.session_id = f.session.value.trim();
  if (f.speaker.value) filters.speaker = f.speaker.value.trim();
  if (f.from.value) filters.time_from = isoLocal(f.from.value);
  if (f.to.value) filters.time_to = isoLocal(f.to.value);
  const body = { user_id: f.user.value.trim(), query: f.q.value, strategy: f.strategy.value,
    limit: Number(f.limit.value) || 10, expand_links: f.links.checked, explain: true };
  if (Object.keys(filters).length) body.filters = filters;
  $("#results").replaceChildren();
  $("#search-took").textContent = "Searching…";
  let res;
  try { res = await api("/v1/search", { method: "POST", body }); } catch (e) { $("#search-took").textContent = ""; fail(e); return; }
  $("#search-took").textContent = `${res.results.length} results in ${res.took_ms.toFixed(1)} ms (took_ms)`;
  const user = body.user_id;
  $("#results").replaceChildren(...res.results.map((r, i) => h("li", { "data-id": r.id },
    h("div", {}, h("span", { class: "meta" }, `${i + 1}. `), h("a", { href: `#/memory/${enc(user)}/${enc(r.id)}` }, r.memory)),
    h("div", { class: "scores" },
      h("span", {}, "score ", h("b", {}, fmtScore(r.score))),
      h("span", {}, "fused ", h("b", {}, fmtScore(r.scores?.fused))),
      h("span", {}, "vector ", h("b", {}, fmtScore(r.scores?.vector))),
      h("span", {}, "BM25 ", h("b", {}, fmtScore(r.scores?.bm25))),
      h("span", {}, `session ${r.session_id} · ${r.speaker || "—"} · ${fmtTime(r.timestamp)}`)),
    r.linked && r.linked.length ? h("ul", { class: "linked" }, r.linked.map((l) => h("li", {}, "linked: ",
      h("a", { href: `#/memory/${enc(user)}/${enc(l.id)}` }, l.memory), h("span", { class: "meta" }, ` — ${l.reason}`)))) : null)));
}

// --- live feed (polling) --------------------------------------------------------------------

function startFeed() {
  state.feedCursor = null;
  $("#feed").replaceChildren();
  pollFeed().catch(fail);
  state.feedTimer = setInterval(() => { if (!state.feedPaused) pollFeed().catch(fail); }, 2000);
}

async function pollFeed() {
  const user = $("#live-user").value.trim();
  const data = await api(`/v1/feed${qs({ user_id: user, cursor: state.feedCursor, limit: 100 })}`);
  const first = state.feedCursor === null;
  state.feedCursor = data.cursor ?? state.feedCursor;
  for (const m of data.memories) {
    const li = h("li", { class: first ? null : "new", "data-id": m.id },
      h("a", { href: `#/memory/${enc(m.user_id)}/${enc(m.id)}` }, m.memory),
      h("div", { class: "meta" }, `${m.user_id} · ${m.session_id} · ${m.kind} · written ${fmtTime(m.created_at)}`));
    $("#feed").prepend(li);
  }
  while ($("#feed").children.length > 300) $("#feed").lastChild.remove();
}

// --- jobs and generations -------------------------------------------------------------------

async function loadJobs() {
  const [gens, jobs] = await Promise.all([api("/v1/generations"), api("/v1/jobs?limit=20")]);
  $("#generations tbody").replaceChildren(...gens.generations.map((g) => h("tr", { "data-generation": g.generation },
    h("td", {}, String(g.generation)), h("td", { class: "text" }, badge(g.status)), h("td", { class: "text" }, g.model),
    h("td", {}, String(g.memory_version)),
    h("td", {}, g.status === "active" ? "serving" : h("button", { type: "button", onclick: () => activate(g.generation) },
      `Activate generation ${g.generation}`)))));
  $("#jobs").replaceChildren(...jobs.jobs.map((j) => h("li", {},
    h("div", {}, h("b", {}, j.kind), " ", badge(j.status), h("span", { class: "meta" }, ` ${j.id} · ${j.stage || ""} · ${fmtTime(j.created_at)}`)),
    h("label", { class: "meta", for: `p-${j.id}` }, `${fmtNum(j.done)} / ${fmtNum(j.total)}`),
    " ", h("progress", { id: `p-${j.id}`, max: Math.max(j.total, 1), value: j.done }),
    j.eta_s ? h("span", { class: "meta" }, ` ETA ${Math.round(j.eta_s)} s`) : null,
    j.error ? h("div", { class: "error" }, j.error) : null)));
}

async function genAction(label, call) {
  $("#gen-result").textContent = `${label}…`;
  try {
    const r = await call();
    const active = r.active ?? r.result?.active;
    $("#gen-result").textContent = `${label}: generation ${active} is active.`;
  } catch (e) {
    $("#gen-result").textContent = e instanceof ApiError && e.status === 403
      ? `${label} needs an admin key.` : `${label} failed: ${e.message}`;
    if (e instanceof ApiError && e.status === 401) fail(e);
  }
  await loadJobs().catch(fail);
}

function activate(n) {
  return genAction(`Activating generation ${n}`, () => api(`/v1/generations/${n}/activate`, { method: "POST" }));
}

function rollback() {
  return genAction("Rollback", () => api("/v1/jobs", { method: "POST", body: { kind: "rollback" } }));
}

// --- charts ---------------------------------------------------------------------------------

async function drawCharts() {
  const user = $("#chart-user").value.trim();
  if (!user) return;
  const [{ sessions }, growth] = await Promise.all([
    api(`/v1/users/${enc(user)}/sessions`),
    api(`/v1/users/${enc(user)}/memories-over-time${qs({ bucket: "minute" })}`),
  ]);
  const ordered = sessions.slice().sort((a, b) => a.session_id.localeCompare(b.session_id));
  const labels = ordered.map((s) => s.session_id);
  Charts.bars($("#chart-tokens"), `Tokens per session of ${user}`, labels, [
    { name: "raw", color: "#2457c5", values: ordered.map((s) => s.tokens.raw) },
    { name: "compressed", color: "#7fa3ea", values: ordered.map((s) => s.tokens.compressed) },
    { name: "LLM in", color: "#c77d1a", values: ordered.map((s) => s.tokens.llm_input) },
    { name: "LLM out", color: "#1f7a3a", values: ordered.map((s) => s.tokens.llm_output) },
  ]);
  Charts.bars($("#chart-ratio"), `Compression ratio per session of ${user}`, labels,
    [{ name: "compressed / raw", color: "#7a3fc7", values: ordered.map((s) => s.tokens.compression_ratio || 0) }],
    (v) => v.toFixed(2));
  let total = 0;
  Charts.steps($("#chart-growth"), `Memories of ${user} over time`,
    growth.points.map((p) => ({ t: new Date(p.start), v: (total += p.memories) })), "#2457c5");
}

// --- wiring ---------------------------------------------------------------------------------

window.addEventListener("hashchange", () => {
  const [view, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (view === "conversation") { showConversation(...args).catch(fail); return; }
  route();
});
$("#login-form").addEventListener("submit", login);
$("#logout").addEventListener("click", logout);
$("#users-more").addEventListener("click", () => loadUsers(true).then(renderUsers).catch(fail));
$("#search-form").addEventListener("submit", search);
$("#live-toggle").addEventListener("click", (ev) => {
  state.feedPaused = !state.feedPaused;
  ev.target.setAttribute("aria-pressed", String(state.feedPaused));
  ev.target.textContent = state.feedPaused ? "Resume" : "Pause";
});
$("#live-user").addEventListener("change", () => { stopTimers(); startFeed(); });
$("#rollback").addEventListener("click", rollback);
$("#chart-draw").addEventListener("click", () => drawCharts().catch(fail));
if (location.hash.startsWith("#/conversation/")) {
  const [, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  showConversation(...args).catch(fail);
} else route();
