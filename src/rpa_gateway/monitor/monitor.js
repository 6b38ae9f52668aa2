// The web monitor: the signed-in token's executions, live from GET /rpa/v1/feed.
// No build step, no dependency: the token stays in this tab's sessionStorage and goes
// only into Authorization headers (fetch, since EventSource cannot send headers).
"use strict";

const TOKEN_KEY = "rpa-gateway-token";
const FINISHED = ["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"];
const OUTCOME_COLOURS = { SUCCEEDED: "#1a7f37", FAILED: "#cf222e", TIMED_OUT: "#8c1d18", CANCELLED: "#d29922" };
const PALETTE = ["#0969da", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#57606a"];

const state = {
  executions: new Map(), // id -> change (the latest we know)
  feedCursor: null, // the last change id seen: where the feed resumes
  backend: "",
  session: 0, // bumped on sign-out: loops of an old session stop
  detail: null, // { id, abort, ended }
  feedAbort: null, // ends this session's feed request
};

const $ = (selector) => document.querySelector(selector);

class Unauthorized extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token()}`, Accept: "application/json" },
  });
  if (response.status === 401) throw new Unauthorized((await response.json()).message);
  return response;
}

// Reads a Server-Sent Events response; resolves when the server ends it.
async function readEvents(path, lastEventId, onOpen, onEvent, signal) {
  const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const response = await fetch(path, { headers, signal, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("the token is not accepted");
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let opened = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    if (!opened) {
      opened = true;
      onOpen(); // the first bytes: the service is following for us now
    }
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { id: null, event: "message", data: null };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") event.id = text;
        else if (field === "event") event.event = text;
        else if (field === "data") event.data = event.data === null ? text : `${event.data}\n${text}`;
      }
      if (event.data !== null) onEvent(event);
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setConnection(text, mode) {
  const badge = $("#connection");
  badge.textContent = text;
  badge.dataset.state = mode;
}

// --- the list ---------------------------------------------------------------------
function applyChange(change) {
  const known = state.executions.get(change.id);
  if (known && known.updated_at > change.updated_at) return; // an older word on it
  const merged = { ...(known || {}), ...change };
  if (!change.progress && known && !FINISHED.includes(change.status)) merged.progress = known.progress;
  state.executions.set(change.id, merged);
  scheduleRender();
  if (state.detail && state.detail.id === change.id) renderDetailHead(merged);
}

function fromView(view) {
  return {
    id: view.id,
    project_id: view.project_id,
    sid: view.sid,
    status: view.status,
    created_at: Date.parse(view.created_at) / 1000,
    updated_at: Date.parse(view.updated_at) / 1000,
    finished_at: view.finished_at ? Date.parse(view.finished_at) / 1000 : null,
    code: view.result ? view.result.code : undefined,
    message: view.result ? view.result.message : undefined,
  };
}

async function followFeed(session, onFirstOpen) {
  let delay = 250;
  while (session === state.session) {
    try {
      await readEvents(
        "/rpa/v1/feed",
        state.feedCursor,
        () => {
          setConnection("live", "live");
          delay = 250;
          onFirstOpen();
        },
        (event) => {
          if (event.event !== "change" || session !== state.session) return;
          state.feedCursor = event.id;
          applyChange(JSON.parse(event.data));
        },
        state.feedAbort.signal,
      );
    } catch (error) {
      if (error instanceof Unauthorized) return signOut(error.message);
    }
    if (session !== state.session) return;
    setConnection("reconnecting…", "reconnecting");
    await sleep(delay);
    delay = Math.min(delay * 2, 4000);
  }
}

async function loadList(session) {
  const response = await api("/rpa/v1/executions?limit=200");
  if (!response.ok) throw new Error(`listing: HTTP ${response.status}`);
  const page = await response.json();
  if (session !== state.session) return;
  for (const view of page.items) applyChange(fromView(view));
  // Changes that happened while nothing was listening are replayed from here on.
  let newest = 0;
  for (const item of state.executions.values()) newest = Math.max(newest, item.updated_at);
  if (!state.feedCursor && newest) state.feedCursor = String(Math.round(newest * 1000));
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    renderList();
    renderCharts();
  });
}

function duration(item, now) {
  const end = item.finished_at || now;
  return Math.max(0, end - item.created_at);
}

// Cells as text (never markup: what they show comes from callers), each with its class.
function appendCells(row, cells) {
  for (const [text, cls] of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    cell.className = cls;
    row.append(cell);
  }
}

function renderList() {
  const status = $("#filter-status").value;
  const project = $("#filter-project").value;
  const items = [...state.executions.values()].sort((a, b) => b.created_at - a.created_at);
  const now = Date.now() / 1000;
  const counts = {};
  const projects = new Set();
  const rows = [];
  for (const item of items) {
    projects.add(item.project_id);
    if (project && item.project_id !== project) continue;
    counts[item.status] = (counts[item.status] || 0) + 1;
    if (status && item.status !== status) continue;
    const row = document.createElement("tr");
    row.dataset.id = item.id;
    row.dataset.status = item.status;
    const cells = [
      [item.status, `status s-${item.status}`],
      [item.project_id, "project"],
      [item.sid, "sid"],
      [state.backend, "backend"],
      [new Date(item.created_at * 1000).toLocaleTimeString(), "started"],
      [`${duration(item, now).toFixed(1)} s`, "duration"],
      [item.code === undefined || item.code === null ? "" : String(item.code), "code"],
      [item.id, "id"],
    ];
    appendCells(row, cells);
    row.addEventListener("click", () => openDetail(item.id));
    rows.push(row);
  }
  $("#executions tbody").replaceChildren(...rows);
  $("#counts").replaceChildren(
    ...Object.entries(counts)
      .sort()
      .map(([name, n]) => {
        const span = document.createElement("span");
        span.className = `count s-${name}`;
        span.dataset.status = name;
        span.textContent = `${name} ${n}`;
        return span;
      }),
  );
  const select = $("#filter-project");
  const chosen = select.value;
  const options = [...projects].sort();
  if (options.join("\n") !== [...select.options].slice(1).map((o) => o.value).join("\n")) {
    select.replaceChildren(new Option("all", ""), ...options.map((p) => new Option(p, p)));
    select.value = chosen;
  }
}

// --- charts (plain SVG) -------------------------------------------------------------
function svgElement(name, attributes, text) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function renderCharts() {
  const finished = [...state.executions.values()].filter((e) => e.finished_at);
  // Executions per minute by outcome, the last 30 minutes.
  const minutes = 30;
  const nowMinute = Math.floor(Date.now() / 60000);
  const bins = Array.from({ length: minutes }, () => ({}));
  for (const item of finished) {
    const index = minutes - 1 - (nowMinute - Math.floor(item.finished_at / 60));
    if (index >= 0 && index < minutes) bins[index][item.status] = (bins[index][item.status] || 0) + 1;
  }
  const peak = Math.max(1, ...bins.map((b) => Object.values(b).reduce((x, y) => x + y, 0)));
  const rate = $("#chart-rate");
  const bars = [];
  bins.forEach((bin, i) => {
    let y = 110;
    for (const outcome of FINISHED) {
      const n = bin[outcome] || 0;
      if (!n) continue;
      const height = (n / peak) * 100;
      y -= height;
      bars.push(
        svgElement("rect", { x: 10 + i * 11.5, y, width: 10, height, fill: OUTCOME_COLOURS[outcome], "data-outcome": outcome }, undefined),
      );
    }
  });
  bars.push(svgElement("text", { x: 10, y: 119, "font-size": 8 }, `−${minutes} min`));
  bars.push(svgElement("text", { x: 330, y: 119, "font-size": 8 }, "now"));
  bars.push(svgElement("text", { x: 10, y: 8, "font-size": 8 }, `peak ${peak}/min`));
  rate.replaceChildren(...bars);

  // Duration histogram per project: 12 buckets up to the longest duration seen.
  const byProject = new Map();
  for (const item of finished) {
    if (!byProject.has(item.project_id)) byProject.set(item.project_id, []);
    byProject.get(item.project_id).push(item.finished_at - item.created_at);
  }
  const longest = Math.max(1, ...finished.map((e) => e.finished_at - e.created_at));
  const buckets = 12;
  const projects = [...byProject.keys()].sort().slice(0, PALETTE.length);
  const counts = projects.map((p) => {
    const c = new Array(buckets).fill(0);
    for (const d of byProject.get(p)) c[Math.min(buckets - 1, Math.floor((d / longest) * buckets))] += 1;
    return c;
  });
  const top = Math.max(1, ...counts.flat());
  const histogram = [];
  const width = 330 / buckets;
  projects.forEach((project, p) => {
    counts[p].forEach((n, b) => {
      if (!n) return;
      const height = (n / top) * 95;
      histogram.push(
        svgElement("rect", {
          x: 10 + b * width + (p * (width - 2)) / projects.length,
          y: 110 - height,
          width: Math.max(1, (width - 2) / projects.length),
          height,
          fill: PALETTE[p],
          "data-project": project,
        }),
      );
    });
    histogram.push(svgElement("text", { x: 10 + p * 60, y: 8, "font-size": 8, fill: PALETTE[p] }, project.slice(0, 14)));
  });
  histogram.push(svgElement("text", { x: 10, y: 119, "font-size": 8 }, "0 s"));
  histogram.push(svgElement("text", { x: 310, y: 119, "font-size": 8 }, `${longest.toFixed(1)} s`));
  $("#chart-durations").replaceChildren(...histogram);
}

// --- one execution ----------------------------------------------------------------
function renderDetailHead(item) {
  $("#detail-title").textContent = `${item.project_id} · ${item.id}`;
  $("#detail-cancel").disabled = FINISHED.includes(item.status);
}

function setProgress(percent, message) {
  if (typeof percent === "number") $("#detail-progress").style.width = `${Math.max(0, Math.min(100, percent))}%`;
  $("#detail-progress-text").textContent = message || "";
}

async function refreshView(detail) {
  const response = await api(`/rpa/v1/executions/${encodeURIComponent(detail.id)}`);
  if (!response.ok || state.detail !== detail) return null;
  const view = await response.json();
  const fields = [
    ["status", view.status],
    ["project", view.project_id],
    ["sid", view.sid],
    ["params", JSON.stringify(view.params)],
    ["started", new Date(view.created_at).toLocaleString()],
    ["upstream id", view.upstream_id || "—"],
  ];
  if (view.queue_position !== null && view.queue_position !== undefined) fields.push(["queue position", String(view.queue_position)]);
  $("#detail-fields").replaceChildren(
    ...fields.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.field = name;
      return [dt, dd];
    }),
  );
  $("#detail-logs").textContent = view.logs && view.logs.length ? view.logs.join("\n") : "—";
  if (view.result) {
    $("#detail-result").textContent = `${view.result.code} ${view.result.message}\n${JSON.stringify(view.result.data, null, 2)}`;
    $("#detail-result").dataset.code = String(view.result.code);
  }
  applyChange(fromView(view));
  return view;
}

async function followDetail(detail) {
  let cursor = null;
  while (state.detail === detail) {
    try {
      await readEvents(
        `/rpa/v1/executions/${encodeURIComponent(detail.id)}/events`,
        cursor,
        () => {},
        (event) => {
          if (state.detail !== detail) return;
          cursor = event.id;
          const data = JSON.parse(event.data);
          const entry = document.createElement("li");
          const when = new Date(data.at * 1000).toLocaleTimeString();
          const what = event.event === "progress" ? `${data.message}${typeof data.percent === "number" ? ` (${data.percent}%)` : ""}` : event.event === "terminal" ? `${data.status}: ${data.code} ${data.message}` : data.status;
          entry.textContent = `${when}  ${event.event}  ${what}`;
          entry.dataset.kind = event.event;
          $("#detail-timeline").append(entry);
          if (event.event === "progress") setProgress(data.percent, data.message);
          if (event.event === "terminal") {
            if (data.code === 0) setProgress(100, "done");
            detail.ended = true;
            refreshView(detail);
          }
        },
        detail.abort.signal,
      );
    } catch (error) {
      if (error instanceof Unauthorized) return signOut(error.message);
      if (state.detail !== detail) return;
    }
    if (detail.ended) return;
    await sleep(500);
  }
}

async function openDetail(id) {
  closeDetail();
  const detail = { id, abort: new AbortController(), ended: false };
  state.detail = detail;
  $("#app").hidden = true;
  $("#detail").hidden = false;
  $("#detail-timeline").replaceChildren();
  $("#detail-result").textContent = "—";
  delete $("#detail-result").dataset.code;
  setProgress(0, "");
  $("#detail-progress").style.width = "0%";
  const known = state.executions.get(id);
  if (known) renderDetailHead(known);
  followDetail(detail);
  // The run's logs (local backend) while it runs.
  while (state.detail === detail) {
    const view = await refreshView(detail).catch(() => null);
    if (view && FINISHED.includes(view.status)) return;
    await sleep(1000);
  }
}

function closeDetail() {
  if (state.detail) state.detail.abort.abort();
  state.detail = null;
  $("#detail").hidden = true;
  $("#app").hidden = !token();
}

async function cancelShown() {
  const detail = state.detail;
  if (!detail) return;
  $("#detail-cancel").disabled = true;
  const response = await api(`/rpa/v1/executions/${encodeURIComponent(detail.id)}/cancel`, { method: "POST" });
  if (response.ok) applyChange(fromView(await response.json()));
  refreshView(detail);
}

// --- webhooks: each endpoint's health ------------------------------------------------
const WEBHOOKS_EVERY_MS = 5000;

function webhookHealth(hook) {
  if (!hook.enabled) {
    return ["disabled", hook.disabled_reason ? `disabled: ${hook.disabled_reason}` : "disabled"];
  }
  if (hook.failing_since) {
    return ["failing", `failing since ${new Date(hook.failing_since).toLocaleString()}`];
  }
  return ["healthy", "healthy"];
}

function lastDelivery(delivery) {
  if (!delivery) return "none yet";
  const reply = delivery.last_status ? `HTTP ${delivery.last_status}` : delivery.last_error || "no reply";
  const when = delivery.last_attempt_at ? new Date(delivery.last_attempt_at).toLocaleTimeString() : "";
  if (delivery.status === "pending" && !delivery.attempts) return `${delivery.event_type}: waiting`;
  return `${delivery.event_type}: ${delivery.status} (${reply}) ${when}`.trim();
}

async function renderWebhooks(session) {
  const response = await api("/rpa/v1/webhooks");
  if (!response.ok || session !== state.session) return;
  const hooks = (await response.json()).items;
  const lasts = await Promise.all(
    hooks.map(async (hook) => {
      const page = await api(`/rpa/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries?limit=1`);
      return page.ok ? (await page.json()).items[0] : undefined;
    }),
  );
  if (session !== state.session) return;
  const rows = hooks.map((hook, i) => {
    const [health, text] = webhookHealth(hook);
    const row = document.createElement("tr");
    row.dataset.id = hook.id;
    row.dataset.health = health;
    let host = "";
    try {
      host = new URL(hook.url).host; // not the whole URL: its query may hold a token
    } catch {
      host = "?";
    }
    const cells = [
      [text, `health h-${health}`],
      [host, "host"],
      [hook.events.join(", "), "events"],
      [hook.project_id || "all", "project"],
      [lastDelivery(lasts[i]), "last"],
      [hook.id, "id"],
    ];
    appendCells(row, cells);
    return row;
  });
  $("#webhook-table tbody").replaceChildren(...rows);
  $("#webhooks").hidden = rows.length === 0;
}

async function followWebhooks(session) {
  while (session === state.session) {
    try {
      await renderWebhooks(session);
    } catch (error) {
      if (error instanceof Unauthorized) return;
    }
    await sleep(WEBHOOKS_EVERY_MS);
  }
}

// --- session ----------------------------------------------------------------------
async function signIn(session) {
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  setConnection("connecting…", "reconnecting");
  try {
    const projects = await api("/rpa/v1/projects");
    state.backend = projects.status === 404 ? "astron" : "local";
    // The feed first: once it follows, the list is read, and nothing changes unseen between.
    let opened;
    const following = new Promise((resolve) => (opened = resolve));
    state.feedAbort = new AbortController();
    followFeed(session, opened);
    await Promise.race([following, sleep(5000)]);
    await loadList(session);
    followWebhooks(session);
  } catch (error) {
    if (error instanceof Unauthorized) signOut(error.message);
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.session += 1;
  if (state.feedAbort) state.feedAbort.abort();
  state.executions.clear();
  state.feedCursor = null;
  closeDetail();
  $("#app").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#executions tbody").replaceChildren();
  $("#webhook-table tbody").replaceChildren();
  $("#webhooks").hidden = true;
  setConnection("signed out", "off");
  const error = $("#sign-in-error");
  error.hidden = !message;
  error.textContent = message || "";
}

function start() {
  for (const status of ["ACCEPTED", "PENDING", "RUNNING", ...FINISHED]) $("#filter-status").append(new Option(status, status));
  $("#filter-status").addEventListener("change", scheduleRender);
  $("#filter-project").addEventListener("change", scheduleRender);
  $("#sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    signIn(state.session);
  });
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#detail-close").addEventListener("click", closeDetail);
  $("#detail-cancel").addEventListener("click", cancelShown);
  setInterval(scheduleRender, 1000); // durations of running executions
  if (token()) signIn(state.session);
}

start();
