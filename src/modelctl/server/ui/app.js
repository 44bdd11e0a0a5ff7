// modelctl's dashboard: the shell (navigation, API key, event stream) and the pages.
// Preact with htm (tagged templates, no build step); every fact comes from /api/v1, and every
// action goes through it. Pages live at #/overview, #/models, #/models/<id>, #/running,
// #/usage, #/playground and #/doctor.
import { html, render, useState, useEffect, useRef, useCallback, useMemo } from "/ui/vendor/preact-htm.js";

// ------------------------------------------------------------------ the API

const KEY = "modelctl.key";
// kept for this tab only (sessionStorage): no other page of this origin in another tab (the API's
// /docs, which loads scripts from a CDN) can read it
const keys = sessionStorage;
const keyPrompt = { open: false, reason: null, waiters: [], listeners: new Set() };

function askKey(reason) {
  keyPrompt.open = true;
  keyPrompt.reason = reason;
  keyPrompt.listeners.forEach((f) => f());
  return new Promise((resolve) => keyPrompt.waiters.push(resolve));
}

function keyGiven(key) {
  if (key) keys.setItem(KEY, key);
  keyPrompt.open = false;
  keyPrompt.listeners.forEach((f) => f());
  keyPrompt.waiters.splice(0).forEach((resolve) => resolve());
}

export class ApiError extends Error {
  constructor(status, message, hint) {
    super(message);
    this.status = status;
    this.hint = hint;
  }
}

async function problem(res) {
  let message = `${res.status} ${res.statusText}`;
  let hint = null;
  try {
    const body = await res.json();
    const error = body.error ?? body.detail ?? body;
    if (typeof error === "string") message = error;
    else if (error?.message) ({ message, hint = null } = error);
    else if (Array.isArray(error)) message = error.map((e) => e.msg ?? JSON.stringify(e)).join("; ");
  } catch {
    /* not JSON: the status line says it */
  }
  return new ApiError(res.status, message, hint);
}

// A call to the server, with the API key (asked for once, on the first 401) as a bearer header.
async function api(path, { method = "GET", body, raw = false, signal } = {}) {
  for (;;) {
    const headers = {};
    const key = keys.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401) {
      await askKey(key ? "The server refused that key." : "This server needs its API key.");
      continue;
    }
    if (!res.ok) throw await problem(res);
    if (raw) return res;
    return res.status === 204 ? null : res.json();
  }
}

// Server-sent events read with fetch (EventSource cannot send the key): `onEvent(name, data)`.
async function readEvents(res, onEvent, { idle = null } = {}) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let watchdog = null;
  const quiet = () => new Promise((_, fail) => {
    watchdog = setTimeout(() => fail(new Error(`nothing from the server for ${idle / 1000} s`)), idle);
  });
  try {
    for (;;) {
      const { value, done } = await (idle ? Promise.race([reader.read(), quiet()]) : reader.read());
      clearTimeout(watchdog);
      if (done) return;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, data.join("\n"));
      }
    }
  } finally {
    clearTimeout(watchdog);
    reader.cancel().catch(() => {}); // a handler that threw, a watchdog: the connection closes
  }
}

// One stream of the server's events for the whole page; pages subscribe to what they show.
const bus = { handlers: new Set(), live: false, liveListeners: new Set() };

function setLive(live) {
  bus.live = live;
  bus.liveListeners.forEach((f) => f(live));
}

async function followEvents() {
  for (;;) {
    try {
      const res = await api("/api/v1/events?recent=false", { raw: true });
      setLive(true);
      // what changed while it was away: every page that follows events reads its facts again
      bus.handlers.forEach((f) => f("model-resync", { model: null }));
      // the server says something every 15 s (a keep-alive): 45 s of nothing is a dead line
      await readEvents(res, (name, data) => {
        let event = {};
        try {
          event = JSON.parse(data);
        } catch {
          return;
        }
        bus.handlers.forEach((f) => f(name, event));
      }, { idle: 45000 });
    } catch {
      /* the server went away: say so, and try again */
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function useEvents(handler, prefix = "model-") {
  const latest = useRef(handler);
  latest.current = handler;
  useEffect(() => {
    const f = (name, event) => name.startsWith(prefix) && latest.current(name, event);
    bus.handlers.add(f);
    return () => bus.handlers.delete(f);
  }, [prefix]);
}

function useLive() {
  const [live, set] = useState(bus.live);
  useEffect(() => {
    bus.liveListeners.add(set);
    set(bus.live); // it may have changed before this subscribed
    return () => bus.liveListeners.delete(set);
  }, []);
  return live;
}

// Fetch on mount, on `deps`, on `every` ms if given, and when `refresh()` is called.
function useData(path, { deps = [], every = null } = {}) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const serial = useRef(0);
  const refresh = useCallback(() => {
    if (!path) return;
    const mine = ++serial.current;
    api(path).then(
      (data) => mine === serial.current && setState({ data, error: null, loading: false, at: Date.now() }),
      (error) => mine === serial.current && setState((s) => ({ ...s, error, loading: false })),
    );
  }, [path, ...deps]);
  useEffect(() => {
    refresh();
    if (!every) return undefined;
    const timer = setInterval(refresh, every);
    return () => clearInterval(timer);
  }, [refresh, every]);
  return { ...state, refresh };
}

// ------------------------------------------------------------------ small parts

const toast = { listeners: new Set() };
function notify(message, kind = "info") {
  toast.listeners.forEach((f) => f({ message, kind, at: Date.now() }));
}
function failed(error) {
  notify(error.hint ? `${error.message} (${error.hint})` : String(error.message ?? error), "error");
}

function Toast() {
  const [shown, setShown] = useState(null);
  useEffect(() => {
    let timer;
    const f = (t) => {
      setShown(t);
      clearTimeout(timer);
      timer = setTimeout(() => setShown(null), t.kind === "error" ? 9000 : 4000);
    };
    toast.listeners.add(f);
    return () => toast.listeners.delete(f);
  }, []);
  return html`<div role=${shown?.kind === "error" ? "alert" : "status"} aria-live="polite">
    ${shown && html`<div class="toast ${shown.kind}" key=${shown.at}>${shown.message}</div>`}
  </div>`;
}

function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error-box" role="alert">
    ${error.message}${error.hint ? html`<br /><span class="muted">${error.hint}</span>` : ""}
  </div>`;
}

const UNITS = ["B", "KB", "MB", "GB", "TB"];
function bytes(n) {
  if (n === null || n === undefined) return "—";
  let i = 0;
  let v = n;
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${UNITS[i]}`;
}
function gib(n) {
  if (n === null || n === undefined) return "—";
  return n >= 2 ** 30 || n === 0 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${Math.ceil(n / 2 ** 20)} MiB`;
}
function count(n) {
  if (n === null || n === undefined) return "—";
  if (n >= 1e9) return `${(n / 1e9).toFixed(n >= 1e10 ? 0 : 1)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(n);
}
function num(n, digits = 1) {
  return n === null || n === undefined ? "—" : Number(n).toFixed(digits);
}
function ms(n) {
  return n === null || n === undefined ? "—" : `${Math.round(n)} ms`;
}
function duration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 0) return "forever";
  if (s < 60) return `${Math.ceil(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
function when(t) {
  return t ? new Date(t * 1000).toLocaleString() : "—";
}
const modelHref = (id) => `#/models/${encodeURIComponent(id)}`;
// a model's id in an API path: its `/` kept (the API takes ids as they are), the rest escaped
// (and a `.` or `..` part escaped too: a browser reads those as steps up the path)
const enc = (id) => id.split("/").map((p) => (p === "." || p === ".." ? p.replaceAll(".", "%2E") : encodeURIComponent(p))).join("/");

// ------------------------------------------------------------------ routing

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const slash = path.indexOf("/");
  const page = (slash < 0 ? path : path.slice(0, slash)) || "overview";
  let rest = slash < 0 ? "" : path.slice(slash + 1);
  try {
    rest = decodeURIComponent(rest);
  } catch {
    return { page: "not-found", rest, params: new URLSearchParams() }; // `#/models/100%`
  }
  return { page, rest, params: new URLSearchParams(query) };
}

function useRoute() {
  const [route, setRoute] = useState(parseRoute());
  useEffect(() => {
    const f = () => setRoute(parseRoute());
    addEventListener("hashchange", f);
    return () => removeEventListener("hashchange", f);
  }, []);
  return route;
}

// Change the query part of the page's address without a new history entry per keystroke.
function setQuery(page, values) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== "" && v !== null && v !== undefined) params.set(k, v);
  const text = params.toString();
  history.replaceState(null, "", `#/${page}${text ? `?${text}` : ""}`);
}

const PAGES = [
  ["overview", "Overview"],
  ["models", "Models"],
  ["running", "Running"],
  ["usage", "Usage"],
  ["playground", "Playground"],
  ["doctor", "Doctor"],
];

// ------------------------------------------------------------------ charts (uPlot, loaded when a page has a chart)

let uPlotModule = null;
function loadUPlot() {
  uPlotModule ??= import("/ui/vendor/uPlot.js").then((m) => m.default);
  return uPlotModule;
}
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// A time chart: `data` is [times (unix s), ...one array per series]; `series` [{label, color}].
function Chart({ title, series, data, unit = "", range = null }) {
  const box = useRef(null);
  const plot = useRef(null);
  const points = data?.[0]?.length ?? 0;
  useEffect(() => {
    let alive = true;
    loadUPlot().then((uPlot) => {
      if (!alive || !box.current) return;
      plot.current?.destroy();
      const axis = { stroke: css("--muted"), grid: { stroke: css("--line"), width: 1 }, ticks: { stroke: css("--line") } };
      plot.current = new uPlot(
        {
          width: Math.max(240, box.current.clientWidth),
          height: 200,
          series: [{}, ...series.map((s) => ({
            label: s.label, stroke: css(s.color), width: 2, spanGaps: true,
            points: { show: true, size: 5 }, value: (u, v) => (v === null ? "—" : `${+v.toFixed(2)}${unit}`),
          }))],
          axes: [axis, { ...axis, size: 56 }],
          scales: { x: range ? { time: true, range: () => range } : { time: true } },
        },
        data,
        box.current,
      );
    });
    return () => {
      alive = false;
    };
  }, [data]);
  useEffect(() => {
    const observer = new ResizeObserver(() => {
      if (plot.current && box.current) plot.current.setSize({ width: Math.max(240, box.current.clientWidth), height: 200 });
    });
    observer.observe(box.current);
    return () => {
      observer.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);
  const last = series.map((s, i) => `${s.label} ${data?.[i + 1]?.at(-1) ?? "none"}`).join(", ");
  return html`<figure class="panel" style="margin:0">
    <figcaption><h3 style="margin-top:0">${title}</h3></figcaption>
    <div class="chart" ref=${box} role="img" data-points=${points}
      aria-label=${`${title}: ${points} points${points ? `; latest ${last}` : ""}`}></div>
    ${points === 0 && html`<p class="muted">No requests in this range yet.</p>`}
  </figure>`;
}

const EMPTY = [];
// the charts' data, made again only when the points change (a new array is a new chart)
function useSeries(points, ...fields) {
  return useMemo(() => seriesData(points, ...fields), [points]);
}

function seriesData(points, ...fields) {
  const xs = points.map((p) => p.at);
  return [xs, ...fields.map((f) => points.map((p) => (typeof f === "function" ? f(p) : p[f])))];
}

// ------------------------------------------------------------------ Overview

function MemoryBar({ loaded }) {
  const budget = loaded.budget;
  const used = loaded.used;
  const colors = ["--c1", "--c2", "--c3", "--c4", "--c5", "--c6"];
  const total = budget || Math.max(used, 1);
  return html`<div>
    <div class="meter" role="img" aria-label=${`memory: ${gib(used)} used of ${budget ? gib(budget) : "no set budget"}`}>
      ${loaded.models.map((m, i) => html`<span key=${m.model} title=${`${m.model}: ${gib(m.counted)}`}
        style=${{ width: `${Math.min(100, (100 * (m.counted || 0)) / total)}%`, background: css(colors[i % colors.length]) }}></span>`)}
    </div>
    <p class="muted" style="margin:0.4rem 0 0">${gib(used)} used of ${budget ? `a budget of ${gib(budget)}` : "no set budget"}
      · ${loaded.models.length} loaded${loaded.max_loaded ? ` (at most ${loaded.max_loaded})` : ""}</p>
    <div class="legend">
      ${loaded.models.map((m, i) => html`<span key=${m.model}><i style=${{ background: css(colors[i % colors.length]) }}></i>
        <a href=${modelHref(m.model)}>${m.model}</a>: estimate ${gib(m.size)}, measured ${gib(m.measured)}</span>`)}
    </div>
  </div>`;
}

function Overview() {
  const system = useData("/api/v1/system");
  const loaded = useData("/api/v1/loaded", { every: 5000 }); // measured sizes change quietly
  const backends = useData("/api/v1/backends");
  const hour = useData("/api/v1/usage/series", { every: 10000 }); // the last hour
  useEvents(() => loaded.refresh());
  const s = system.data;
  const points = hour.data?.points ?? EMPTY;
  const step = hour.data?.step ?? 60;
  const rate = useSeries(points, (p) => p.requests / step);
  const latency = useSeries(points, "latency_p50_ms", "latency_p95_ms");
  return html`<h1>Overview</h1>
    <div class="grid">
      <section class="panel" aria-labelledby="machine">
        <h2 id="machine">This machine</h2>
        <${ErrorBox} error=${system.error} />
        ${s && html`<dl class="facts">
          <dt>CPU</dt><dd>${s.cpu_model || s.arch} · ${s.cpu_cores} cores, ${s.cpu_threads} threads</dd>
          <dt>RAM</dt><dd>${gib(s.ram_available)} free of ${gib(s.ram_total)}</dd>
          <dt>GPUs</dt><dd>${s.gpus.length ? s.gpus.map((g) => html`<div>${g.name}: ${gib(g.vram_free ?? g.memory_free)} free of ${gib(g.vram_total ?? g.memory_total)}</div>`) : "none"}</dd>
          <dt>Accelerator</dt><dd>${s.accelerator ?? "CPU only"}</dd>
          <dt>System</dt><dd>${s.os} ${s.os_version} · Python ${s.python}</dd>
        </dl>
        ${s.notes?.length ? html`<ul class="muted">${s.notes.map((n) => html`<li>${n}</li>`)}</ul>` : ""}`}
      </section>
      <section class="panel" aria-labelledby="memory">
        <h2 id="memory">Memory budget</h2>
        <${ErrorBox} error=${loaded.error} />
        ${loaded.data && html`<${MemoryBar} loaded=${loaded.data} />`}
        <p><a href="#/running">Running models →</a></p>
      </section>
    </div>
    <div class="grid" style="margin-top:1rem">
      <${Chart} title="Requests per second, last hour" range=${hour.data && [hour.data.since, hour.data.until]} series=${[{ label: "req/s", color: "--c1" }]}
        data=${rate} />
      <${Chart} title="Latency, last hour" unit=" ms" range=${hour.data && [hour.data.since, hour.data.until]}
        series=${[{ label: "p50", color: "--c1" }, { label: "p95", color: "--c2" }]}
        data=${latency} />
    </div>
    <section class="panel" style="margin-top:1rem" aria-labelledby="backends">
      <h2 id="backends">Backends</h2>
      <${ErrorBox} error=${backends.error} />
      <div class="table-wrap"><table>
        <thead><tr><th>Backend</th><th>Kind</th><th>Status</th><th class="num">Models</th><th>Version</th><th>What to do</th></tr></thead>
        <tbody>${(backends.data ?? []).map((b) => html`<tr key=${b.name}>
          <td>${b.name}</td><td>${b.kind?.local ? "local" : "remote"}</td>
          <td><span class="badge ${b.available ? "ok" : "warn"}">${b.available ? "reachable" : "not reachable"}</span></td>
          <td class="num">${b.models ?? "—"}</td><td>${b.version ?? "—"}</td><td class="muted">${b.available ? "" : b.hint ?? b.error ?? ""}</td>
        </tr>`)}</tbody>
      </table></div>
    </section>`;
}

// ------------------------------------------------------------------ Models

const TASKS = ["chat", "completion", "code", "reasoning", "embedding", "vision", "image"];
const SIZES = ["tiny", "small", "medium", "large"];
const PAGE = 50;
const FILTERS = ["q", "backend", "task", "size", "installed", "fits", "tag", "group", "sort", "page"];

// A text input whose value counts once committed (Enter, or leaving it): what is typed survives
// the page redrawing meanwhile.
function CommitInput({ value, onCommit, ...rest }) {
  const [text, setText] = useState(value);
  useEffect(() => setText(value), [value]);
  return html`<input ...${rest} value=${text} onInput=${(e) => setText(e.target.value)}
    onChange=${(e) => onCommit(e.target.value.trim())} />`;
}

function Select({ label, value, onChange, options, any = "any" }) {
  return html`<label class="field">${label}
    <select value=${value} onChange=${(e) => onChange(e.target.value)}>
      <option value="">${any}</option>
      ${options.map((o) => (Array.isArray(o) ? html`<option value=${o[0]}>${o[1]}</option>` : html`<option value=${o}>${o}</option>`))}
    </select></label>`;
}

function Models({ params }) {
  const [f, setF] = useState(() => Object.fromEntries(FILTERS.map((k) => [k, params.get(k) ?? ""])));
  const [typed, setTyped] = useState(f.q);
  const backends = useData("/api/v1/backends");
  const groups = useData("/api/v1/groups");
  useEffect(() => {
    const timer = setTimeout(() => typed !== f.q && setF((old) => ({ ...old, q: typed, page: "" })), 250);
    return () => clearTimeout(timer);
  }, [typed]);
  useEffect(() => setQuery("models", f), [f]);
  const change = (key) => (value) => setF((old) => ({ ...old, [key]: value, page: "" }));
  const page = Number(f.page || 0);
  const query = new URLSearchParams({ limit: PAGE, offset: page * PAGE, order_by: f.sort || "id" });
  for (const key of ["q", "backend", "task", "size", "installed", "fits", "tag", "group"]) if (f[key]) query.set(key, f[key]);
  const list = useData(`/api/v1/models?${query}`);
  useEvents((name) => (name === "model-changed" || name === "model-resync") && list.refresh());
  const total = list.data?.total ?? 0;
  const sortBy = (field) => setF((old) => ({ ...old, sort: (old.sort || "id") === field ? `-${field}` : field, page: "" }));
  // a plain function, not a component: the header's buttons stay the same elements, and keep focus
  const Sort = ({ field, label, cls = "" }) => {
    const state = f.sort === field || (!f.sort && field === "id") ? "ascending" : f.sort === `-${field}` ? "descending" : "none";
    return html`<th class=${cls} aria-sort=${state} key=${field}><button class="sort" onClick=${() => sortBy(field)}>
      ${label}${state === "ascending" ? " ▲" : state === "descending" ? " ▼" : ""}</button></th>`;
  };
  return html`<h1>Models</h1>
    <${PullBox} onDone=${() => list.refresh()} />
    <section class="panel" aria-label="Filters">
      <div class="filters">
        <label class="field grow">Search
          <input type="search" value=${typed} placeholder="id, name, family, description"
            onInput=${(e) => setTyped(e.target.value)} /></label>
        <${Select} label="Backend" value=${f.backend} onChange=${change("backend")} options=${(backends.data ?? []).map((b) => b.name)} />
        <${Select} label="Task" value=${f.task} onChange=${change("task")} options=${TASKS} />
        <${Select} label="Size" value=${f.size} onChange=${change("size")} options=${SIZES} />
        <${Select} label="Installed" value=${f.installed} onChange=${change("installed")} options=${[["true", "installed"], ["false", "not installed"]]} />
        <${Select} label="Fits this machine" value=${f.fits} onChange=${change("fits")} options=${[["true", "fits"], ["false", "does not fit"]]} />
        <label class="field">Tag <${CommitInput} value=${f.tag} size="10" onCommit=${change("tag")} /></label>
        <${Select} label="Group" value=${f.group} onChange=${change("group")} options=${Object.keys(groups.data ?? {})} />
      </div>
    </section>
    <section class="panel" aria-label="Models">
      <${ErrorBox} error=${list.error} />
      <p class="muted" role="status" aria-live="polite" id="model-count">${list.data ? `${total.toLocaleString()} model${total === 1 ? "" : "s"}` : "Loading…"}</p>
      <div class="table-wrap"><table aria-describedby="model-count">
        <thead><tr>
          ${Sort({ field: "id", label: "Model" })}
          ${Sort({ field: "backend", label: "Backend" })}
          <th class="hide-narrow">Tasks</th>
          ${Sort({ field: "parameters", label: "Parameters", cls: "num" })}
          ${Sort({ field: "context_length", label: "Context", cls: "num hide-narrow" })}
          ${Sort({ field: "file_size", label: "On disk", cls: "num hide-narrow" })}
          <th>Installed</th><th class="hide-narrow">Tags</th>
        </tr></thead>
        <tbody>${(list.data?.models ?? []).map((m) => html`<tr key=${m.id}>
          <td><a href=${modelHref(m.id)}>${m.id}</a></td>
          <td>${m.backend}</td>
          <td class="hide-narrow">${(m.tasks ?? []).join(", ")}</td>
          <td class="num">${count(m.parameters)}</td>
          <td class="num hide-narrow">${count(m.context_length)}</td>
          <td class="num hide-narrow">${bytes(m.file_size)}</td>
          <td>${m.installed ? html`<span class="badge ok">installed</span>` : ""}</td>
          <td class="hide-narrow">${(m.tags ?? []).map((t) => html`<span class="chip">${t}</span>`)}</td>
        </tr>`)}</tbody>
      </table></div>
      <nav class="pager" aria-label="Pages">
        <button disabled=${page === 0} onClick=${() => setF((o) => ({ ...o, page: String(page - 1) }))}>← Previous</button>
        <span>${total ? `${(page * PAGE + 1).toLocaleString()}–${Math.min(total, (page + 1) * PAGE).toLocaleString()} of ${total.toLocaleString()}` : ""}</span>
        <button disabled=${(page + 1) * PAGE >= total} onClick=${() => setF((o) => ({ ...o, page: String(page + 1) }))}>Next →</button>
      </nav>
    </section>`;
}

// ------------------------------------------------------------------ one model

function patch(id, changes) {
  return api(`/api/v1/models/${enc(id)}`, { method: "PATCH", body: changes });
}

function ListEditor({ label, values, onAdd, onRemove }) {
  const [text, setText] = useState("");
  const add = (e) => {
    e.preventDefault();
    const value = text.trim();
    if (value) onAdd(value).then(() => setText(""), failed);
  };
  return html`<div>
    <h3>${label}</h3>
    <div>${values.length ? values.map((v) => html`<span class="chip" key=${v}>${v}
      <button aria-label=${`remove ${label.toLowerCase().replace(/s$/, "")} ${v}`} title="remove" onClick=${() => onRemove(v).catch(failed)}>×</button></span>`)
      : html`<span class="muted">none</span>`}</div>
    <form class="row" onSubmit=${add}>
      <input aria-label=${`new ${label.toLowerCase().replace(/s$/, "")}`} value=${text} onInput=${(e) => setText(e.target.value)} size="14" />
      <button type="submit">Add</button>
    </form>
  </div>`;
}

function parseValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function MapEditor({ label, values, onSet }) {
  const [key, setKey] = useState("");
  const [value, setValue] = useState("");
  const slug = label.toLowerCase();
  const add = (e) => {
    e.preventDefault();
    if (key.trim()) onSet({ [key.trim()]: parseValue(value) }).then(() => (setKey(""), setValue("")), failed);
  };
  const entries = Object.entries(values ?? {});
  return html`<div>
    <h3>${label}</h3>
    ${entries.length ? html`<dl class="facts">${entries.map(([k, v]) => html`<dt>${k}</dt><dd>
      <code>${JSON.stringify(v)}</code> <button class="link" aria-label=${`remove ${slug} ${k}`} onClick=${() => onSet({ [k]: null }).catch(failed)}>remove</button></dd>`)}</dl>`
      : html`<p class="muted">none</p>`}
    <form class="row" onSubmit=${add}>
      <input aria-label=${`${slug} key`} placeholder="key" value=${key} onInput=${(e) => setKey(e.target.value)} size="10" />
      <input aria-label=${`${slug} value`} placeholder="value (JSON or text)" value=${value} onInput=${(e) => setValue(e.target.value)} size="16" />
      <button type="submit">Set</button>
    </form>
  </div>`;
}

function Install({ id, onDone, autostart = false }) {
  const [job, setJob] = useState(null);
  const control = useRef(null);
  useEffect(() => {
    if (autostart) start();
    return () => control.current?.abort();
  }, []);
  const start = async () => {
    try {
      const started = await api("/api/v1/installs", { method: "POST", body: { model: id } });
      setJob(started);
      control.current = new AbortController();
      const res = await api(`/api/v1/installs/${started.id}/events`, { raw: true, signal: control.current.signal });
      await readEvents(res, (name, data) => {
        const state = JSON.parse(data);
        setJob(state);
        if (state.state === "done") notify(`${id} installed`);
        if (state.state === "failed") notify(`install failed: ${state.error}`, "error");
      });
      onDone?.();
    } catch (e) {
      if (e.name !== "AbortError") failed(e);
    }
  };
  const cancel = () => job && api(`/api/v1/installs/${job.id}`, { method: "DELETE" }).then(setJob, failed);
  const pct = job?.total ? Math.floor((100 * (job.completed ?? 0)) / job.total) : job?.state === "done" ? 100 : null;
  const running = job && (job.state === "queued" || job.state === "running");
  return html`<div>
    ${!running && !autostart && html`<button class="primary" onClick=${start}>Pull</button>`}
    ${job && html`<div style="margin-top:0.5rem">
      <label for="install-progress">${job.state === "done" ? "Installed" : job.state === "running" || job.state === "queued" ? `Pulling: ${job.status || job.state}` : `Pull ${job.state}`}
        ${pct !== null ? ` ${pct}%` : ""}</label>
      <progress id="install-progress" max="100" value=${pct ?? undefined}></progress>
      ${job.error && html`<p class="fail-text">${job.error}</p>`}
      ${running && html`<button onClick=${cancel}>Cancel pull</button>`}
    </div>`}
  </div>`;
}

// Pull any model by its reference: `hf:org/repo`, `ollama:llama3.2:3b`, a registered id.
function PullBox({ onDone }) {
  const [ref, setRef] = useState("");
  const [pulling, setPulling] = useState(null);
  return html`<section class="panel" aria-labelledby="pull-title">
    <h2 id="pull-title">Pull a model</h2>
    <form class="row" onSubmit=${(e) => (e.preventDefault(), ref.trim() && setPulling({ ref: ref.trim(), at: Date.now() }))}>
      <label class="field grow" style="flex:1">Reference <input value=${ref} onInput=${(e) => setRef(e.target.value)}
        placeholder="hf:org/repo, ollama:llama3.2:3b, or a registered model" /></label>
      <button class="primary" type="submit" style="align-self:flex-end">Pull</button>
    </form>
    ${pulling && html`<${Install} key=${pulling.at} id=${pulling.ref} autostart onDone=${onDone} />`}
  </section>`;
}

function DeleteButton({ model, onDone }) {
  const dialog = useRef(null);
  const [plan, setPlan] = useState(null);
  const [forget, setForget] = useState(false);
  const ask = async () => {
    try {
      setForget(false);
      setPlan(await api(`/api/v1/models/${enc(model.id)}?dry_run=true`, { method: "DELETE" }));
      dialog.current.showModal();
    } catch (e) {
      failed(e);
    }
  };
  const go = async (e) => {
    e.preventDefault();
    const forgetting = plan?.plan ? forget : true; // no files here: the record is what goes
    try {
      await api(`/api/v1/models/${enc(model.id)}?forget=${forgetting}`, { method: "DELETE" });
      dialog.current.close();
      notify(forgetting ? `${model.id} deleted and forgotten` : `${model.id}'s files deleted`);
      onDone(forgetting);
    } catch (err) {
      failed(err);
    }
  };
  const p = plan?.plan;
  return html`<button class="danger" onClick=${ask}>Delete…</button>
    <dialog ref=${dialog} aria-labelledby="delete-title">
      <form method="dialog" onSubmit=${go}>
        <h2 id="delete-title">Delete ${model.id}?</h2>
        ${p ? html`<p>This removes ${p.paths.length} path${p.paths.length === 1 ? "" : "s"}, freeing <strong>${bytes(p.bytes_freed)}</strong> (${p.backend}):</p>
          <ul class="mono" aria-label="paths to delete">${p.paths.map((path) => html`<li>${path}</li>`)}</ul>
          ${p.note && html`<p class="muted">${p.note}</p>`}`
          : html`<p>No files of this model are on this machine: only its record can go.</p>`}
        ${p && html`<label class="check"><input type="checkbox" checked=${forget} onChange=${(e) => setForget(e.target.checked)} /> also forget its record</label>`}
        <div class="row" style="margin-top:1rem">
          <button type="button" onClick=${() => dialog.current.close()}>Keep it</button>
          <button type="submit" class="danger primary">Delete</button>
        </div>
      </form>
    </dialog>`;
}

function LoadForm({ model, onDone }) {
  const [context, setContext] = useState("");
  const [keep, setKeep] = useState("");
  const [pin, setPin] = useState(false);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    const body = { model };
    if (context) body.context = Number(context);
    if (keep) body.keep_alive = keep;
    if (pin) body.pin = true;
    try {
      await api("/api/v1/loaded", { method: "POST", body });
      notify(`${model} loaded`);
      onDone?.();
    } catch (err) {
      failed(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="filters" onSubmit=${submit} aria-label=${`load ${model}`}>
    <label class="field">Context <input type="number" min="16" value=${context} placeholder="default" onInput=${(e) => setContext(e.target.value)} size="7" /></label>
    <label class="field">Keep alive <input value=${keep} placeholder="5m, 1h, -1" onInput=${(e) => setKeep(e.target.value)} size="7" /></label>
    <label class="check"><input type="checkbox" checked=${pin} onChange=${(e) => setPin(e.target.checked)} /> pin</label>
    <button class="primary" type="submit" disabled=${busy}>${busy ? "Loading…" : "Load"}</button>
  </form>`;
}

function ModelPage({ id }) {
  const record = useData(`/api/v1/models/${enc(id)}`);
  const caps = useData(`/api/v1/capabilities/${enc(id)}`);
  const fit = useData(`/api/v1/compatibility/${enc(id)}`);
  useEvents((name, e) => (e.model === id || e.model === null) && record.refresh());
  const m = record.data;
  const edit = (changes) => patch(id, changes).then(() => record.refresh());
  if (record.error) return html`<h1>${id}</h1><${ErrorBox} error=${record.error} /><p><a href="#/models">All models</a></p>`;
  if (!m) return html`<h1>${id}</h1><p class="muted">Loading…</p>`;
  const est = fit.data?.estimate;
  return html`<p><a href="#/models">← All models</a></p>
    <h1>${m.name && m.name !== m.id ? `${m.name} (${m.id})` : m.id}</h1>
    <div class="row" style="margin-bottom:1rem">
      ${m.installed ? html`<span class="badge ok">installed</span>` : html`<span class="badge warn">not installed</span>`}
      <a class="button" href=${`#/playground?model=${encodeURIComponent(m.id)}`}>Chat</a>
      <${DeleteButton} model=${m} onDone=${(forgot) => (forgot ? (location.hash = "#/models") : record.refresh())} />
    </div>
    <div class="grid">
      <section class="panel" aria-labelledby="facts"><h2 id="facts">Facts</h2>
        <dl class="facts">
          <dt>Backend</dt><dd>${m.backend}</dd>
          <dt>Family</dt><dd>${m.family ?? "—"}</dd>
          <dt>Parameters</dt><dd>${count(m.parameters)}${m.size ? ` (${m.size})` : ""}</dd>
          <dt>Quantization</dt><dd>${m.quantization ?? "—"}</dd>
          <dt>Context</dt><dd>${m.context_length ? m.context_length.toLocaleString() + " tokens" : "—"}</dd>
          <dt>On disk</dt><dd>${bytes(m.file_size)}</dd>
          <dt>Download</dt><dd>${bytes(m.download_size)}</dd>
          <dt>Tasks</dt><dd>${(m.tasks ?? []).join(", ") || "—"}</dd>
          <dt>Location</dt><dd class="mono">${m.location ?? "—"}</dd>
          <dt>Digest</dt><dd class="mono">${m.digest ?? "—"}</dd>
          <dt>License</dt><dd>${m.license ?? "—"}</dd>
          <dt>Pricing</dt><dd>${m.pricing ? `${m.pricing.input} / ${m.pricing.output} ${m.pricing.currency} per million tokens in / out` : "—"}</dd>
          ${m.base && html`<dt>Based on</dt><dd><a href=${modelHref(m.base)}>${m.base}</a></dd>`}
          <dt>Updated</dt><dd>${m.updated_at ? new Date(m.updated_at).toLocaleString() : "—"}</dd>
        </dl>
        <h3>Description</h3>
        <${Description} value=${m.description ?? ""} onSave=${(d) => edit({ fields: { description: d || null } })} />
      </section>
      <section class="panel" aria-labelledby="fit"><h2 id="fit">Fit on this machine</h2>
        ${fit.error ? html`<p class="muted">${fit.error.message}</p>` : fit.data && html`
          <p><span class="badge ${fit.data.fits ? "ok" : "fail"}">${fit.data.fits ? "fits" : "does not fit"}</span> ${fit.data.level}: ${fit.data.reason}</p>
          <table><caption class="muted" style="text-align:left">Estimate, in parts (${est.basis}; context ${est.context?.toLocaleString()})</caption>
            <tbody>${["weights", "kv_cache", "compute", "overhead"].map((k) => html`<tr><th scope="row">${k.replace("_", " ")}</th><td class="num">${gib(est[k])}</td></tr>`)}
            <tr><th scope="row">total</th><td class="num"><strong>${gib(est.total)}</strong></td></tr>
            <tr><th scope="row">in VRAM / RAM</th><td class="num">${gib(est.vram)} / ${gib(est.ram)}</td></tr></tbody>
          </table>
          ${est.notes?.length ? html`<ul class="muted">${est.notes.map((n) => html`<li>${n}</li>`)}</ul>` : ""}`}
        <h2 style="margin-top:1rem">Capabilities</h2>
        ${caps.error ? html`<p class="muted">${caps.error.message}</p>` : html`<dl class="facts">
          ${Object.entries(caps.data?.capabilities ?? {}).map(([c, sources]) => html`<dt>${c}</dt><dd class="muted">${sources.join(", ")}</dd>`)}</dl>`}
      </section>
      <section class="panel" aria-labelledby="act"><h2 id="act">Load or pull</h2>
        ${m.installed || !["llamacpp", "huggingface", "ollama"].includes(m.backend)
          ? html`<${LoadForm} model=${m.id} />` : html`<${Install} id=${m.id} onDone=${() => record.refresh()} />`}
      </section>
    </div>
    <section class="panel" style="margin-top:1rem" aria-labelledby="organize"><h2 id="organize">Tags, aliases, groups, metadata</h2>
      <div class="grid">
        <${ListEditor} label="Tags" values=${m.tags ?? []} onAdd=${(v) => edit({ add_tags: [v] })} onRemove=${(v) => edit({ remove_tags: [v] })} />
        <${ListEditor} label="Aliases" values=${m.aliases ?? []} onAdd=${(v) => edit({ add_aliases: [v] })} onRemove=${(v) => edit({ remove_aliases: [v] })} />
        <${ListEditor} label="Groups" values=${m.groups ?? []} onAdd=${(v) => edit({ add_groups: [v] })} onRemove=${(v) => edit({ remove_groups: [v] })} />
        <${MapEditor} label="Custom metadata" values=${m.custom} onSet=${(c) => edit({ custom: c })} />
        <${MapEditor} label="Default parameters" values=${m.defaults} onSet=${(d) => edit({ defaults: d })} />
      </div>
    </section>`;
}

function Description({ value, onSave }) {
  const [text, setText] = useState(value);
  useEffect(() => setText(value), [value]);
  return html`<form onSubmit=${(e) => (e.preventDefault(), onSave(text.trim()).then(() => notify("description saved"), failed))}>
    <textarea aria-label="description" rows="3" value=${text} onInput=${(e) => setText(e.target.value)}></textarea>
    <button type="submit" disabled=${text === value}>Save description</button>
  </form>`;
}

// ------------------------------------------------------------------ Running

function Countdown({ seconds, at }) {
  const [, tick] = useState(0);
  useEffect(() => {
    const timer = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(timer);
  }, []);
  if (seconds === null || seconds === undefined) return html`<span>never</span>`;
  const left = Math.max(0, seconds - (Date.now() - at) / 1000);
  return html`<span class="mono">${duration(left)}</span>`;
}

function Running() {
  // requests in flight, queues, speed and measured memory change without an event: read again
  // every 3 s as well as on each event
  const loaded = useData("/api/v1/loaded", { every: 3000 });
  const installed = useData("/api/v1/models?installed=true&limit=500&order_by=id");
  const fetchedAt = loaded.at;
  const [model, setModel] = useState("");
  const [log, setLog] = useState(null);
  useEvents(() => loaded.refresh());
  const act = (p) => p.then(() => loaded.refresh(), failed);
  const showLog = (id) => api(`/api/v1/logs/${enc(id)}?lines=200`).then((l) => setLog(l), (e) => setLog({ model: id, error: e.message }));
  const d = loaded.data;
  return html`<h1>Running</h1>
    <section class="panel" aria-labelledby="load-one"><h2 id="load-one">Load a model</h2>
      <label class="field">Model <input list="installed-models" value=${model} onInput=${(e) => setModel(e.target.value)} placeholder="id or alias" /></label>
      <datalist id="installed-models">${(installed.data?.models ?? []).map((m) => html`<option value=${m.id} />`)}</datalist>
      ${model && html`<${LoadForm} model=${model} onDone=${() => loaded.refresh()} />`}
    </section>
    <section class="panel" aria-labelledby="loaded-title">
      <div class="row"><h2 id="loaded-title" style="margin:0">Loaded models</h2><span class="spacer"></span>
        ${d && html`<span class="muted">${gib(d.used)} used${d.budget ? ` of ${gib(d.budget)}` : ""}</span>`}
        ${d?.models.length ? html`<button onClick=${() => act(api("/api/v1/loaded", { method: "DELETE" }))}>Unload all</button>` : ""}</div>
      <${ErrorBox} error=${loaded.error} />
      ${d && !d.models.length && html`<p class="muted">Nothing is loaded. Load a model above, or send a request: models load on demand.</p>`}
      ${d?.models.length ? html`<div class="table-wrap"><table>
        <thead><tr><th>Model</th><th>State</th><th class="num">Estimate</th><th class="num">Measured</th><th>Device</th>
          <th class="num">In flight</th><th class="num">Queued</th><th>Unloads in</th><th class="num">Load time</th><th class="num">Tokens/s</th><th>Actions</th></tr></thead>
        <tbody>${d.models.map((s) => html`<tr key=${s.model} data-model=${s.model}>
          <td><a href=${modelHref(s.model)}>${s.model}</a>${d.current === s.model ? html` <span class="badge ok">current</span>` : ""}${s.pinned ? html` <span class="badge warn">pinned</span>` : ""}</td>
          <td>${s.state}${s.error ? html`<div class="fail-text">${s.error}</div>` : ""}</td>
          <td class="num">${gib(s.size)}</td><td class="num">${gib(s.measured)}</td><td>${s.device ?? "—"}</td>
          <td class="num">${s.in_flight}</td><td class="num">${s.waiting}</td>
          <td>${s.pinned ? "pinned" : html`<${Countdown} seconds=${s.expires_in} at=${fetchedAt} />`}</td>
          <td class="num">${s.load_seconds ? `${num(s.load_seconds, 2)} s` : "—"}</td><td class="num">${num(s.tokens_per_second)}</td>
          <td><div class="row">
            <button onClick=${() => act(api(`/api/v1/loaded/${enc(s.model)}`, { method: "DELETE" }))} aria-label=${`unload ${s.model}`}>Unload</button>
            <button onClick=${() => act(api("/api/v1/loaded", { method: "POST", body: { model: s.model, pin: !s.pinned } }))} aria-label=${`${s.pinned ? "unpin" : "pin"} ${s.model}`}>${s.pinned ? "Unpin" : "Pin"}</button>
            ${d.current !== s.model && html`<button onClick=${() => act(api("/api/v1/current", { method: "PUT", body: { model: s.model } }))} aria-label=${`make ${s.model} current`}>Make current</button>`}
            ${s.pid && html`<button onClick=${() => showLog(s.model)} aria-label=${`worker log of ${s.model}`}>Log</button>`}
          </div></td>
        </tr>`)}</tbody></table></div>` : ""}
    </section>
    ${log && html`<section class="panel" aria-labelledby="log-title">
      <div class="row"><h2 id="log-title" style="margin:0">Worker log: ${log.model}</h2><span class="spacer"></span><button onClick=${() => setLog(null)}>Close</button></div>
      ${log.error ? html`<p class="muted">${log.error}</p>` : html`<pre aria-label="worker log">${log.lines.join("\n")}</pre>`}
    </section>`}`;
}

// ------------------------------------------------------------------ Usage

const RANGES = [["900", "15 minutes"], ["3600", "1 hour"], ["21600", "6 hours"], ["86400", "24 hours"], ["604800", "7 days"], ["2592000", "30 days"]];

function Usage({ params }) {
  const [range, setRange] = useState(params.get("range") ?? "3600");
  const [model, setModel] = useState(params.get("model") ?? "");
  const [tick, setTick] = useState(0);
  useEffect(() => setQuery("usage", { range, model }), [range, model]);
  useEffect(() => {
    const timer = setInterval(() => setTick((n) => n + 1), 5000);
    return () => clearInterval(timer);
  }, []);
  const since = useMemo(() => Math.floor(Date.now() / 1000 - Number(range)), [range, tick]);
  const which = model ? `&model=${encodeURIComponent(model)}` : "";
  const series = useData(`/api/v1/usage/series?since=${since}${which}`, { deps: [tick] });
  const stats = useData(`/api/v1/stats?since=${since}${which}`, { deps: [tick] });
  const rows = useData(`/api/v1/usage?limit=50${which}`, { deps: [tick] });
  const models = Object.keys(stats.data?.models ?? {});
  const p = series.data?.points ?? EMPTY;
  const requests = useSeries(p, "requests", "errors");
  const latency = useSeries(p, "latency_p50_ms", "latency_p95_ms", "ttft_avg_ms");
  const speed = useSeries(p, "tokens_per_second");
  const tokens = useSeries(p, "tokens_in", "tokens_out");
  const cost = useSeries(p, "cost");
  const span = series.data && [series.data.since, series.data.until];
  const o = stats.data?.overall;
  const exportCsv = async () => {
    try {
      const res = await api(`/api/v1/usage/export?since=${since}${which}`, { raw: true });
      const url = URL.createObjectURL(await res.blob());
      const a = Object.assign(document.createElement("a"), { href: url, download: "modelctl-usage.csv" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (e) {
      failed(e);
    }
  };
  return html`<h1>Usage</h1>
    <section class="panel filters" aria-label="Range">
      <${Select} label="Time range" value=${range} onChange=${setRange} options=${RANGES} any="" />
      <label class="field">Model <${CommitInput} list="used-models" value=${model} placeholder="all models" onCommit=${setModel} /></label>
      <datalist id="used-models">${models.map((m) => html`<option value=${m} />`)}</datalist>
      <span class="spacer"></span>
      <button onClick=${exportCsv}>Export CSV</button>
    </section>
    <${ErrorBox} error=${series.error ?? stats.error} />
    ${o && html`<section class="panel" aria-label="Totals"><dl class="facts">
      <dt>Requests</dt><dd data-testid="requests-total">${o.requests} (${o.errors} failed)</dd>
      <dt>Latency</dt><dd>p50 ${ms(o.latency_p50_ms)} · p95 ${ms(o.latency_p95_ms)} · first token ${ms(o.ttft_avg_ms)}</dd>
      <dt>Tokens</dt><dd>${o.tokens_in.toLocaleString()} in · ${o.tokens_out.toLocaleString()} out · ${num(o.tokens_per_second)} tokens/s</dd>
      <dt>Cost</dt><dd>${o.cost.toFixed(4)}</dd></dl></section>`}
    <div class="grid" style="margin-top:1rem">
      <${Chart} range=${span} title="Requests" series=${[{ label: "requests", color: "--c1" }, { label: "errors", color: "--c5" }]} data=${requests} />
      <${Chart} range=${span} title="Latency" unit=" ms" series=${[{ label: "p50", color: "--c1" }, { label: "p95", color: "--c2" }, { label: "first token", color: "--c3" }]}
        data=${latency} />
      <${Chart} range=${span} title="Tokens per second" series=${[{ label: "tokens/s", color: "--c4" }]} data=${speed} />
      <${Chart} range=${span} title="Tokens" series=${[{ label: "in", color: "--c6" }, { label: "out", color: "--c2" }]} data=${tokens} />
      <${Chart} range=${span} title="Cost" series=${[{ label: "cost", color: "--c3" }]} data=${cost} />
    </div>
    <section class="panel" style="margin-top:1rem" aria-labelledby="per-model"><h2 id="per-model">Per model</h2>
      <div class="table-wrap"><table><thead><tr><th>Model</th><th class="num">Requests</th><th class="num">Errors</th><th class="num">p50</th><th class="num">p95</th>
        <th class="num">First token</th><th class="num">Tokens/s</th><th class="num">Tokens in</th><th class="num">Tokens out</th><th class="num">Cost</th></tr></thead>
      <tbody>${Object.entries(stats.data?.models ?? {}).map(([id, s]) => html`<tr key=${id}><td><a href=${modelHref(id)}>${id}</a></td>
        <td class="num">${s.requests}</td><td class="num">${s.errors}</td><td class="num">${ms(s.latency_p50_ms)}</td><td class="num">${ms(s.latency_p95_ms)}</td>
        <td class="num">${ms(s.ttft_avg_ms)}</td><td class="num">${num(s.tokens_per_second)}</td><td class="num">${s.tokens_in}</td><td class="num">${s.tokens_out}</td><td class="num">${s.cost.toFixed(4)}</td></tr>`)}</tbody></table></div>
    </section>
    <section class="panel" aria-labelledby="recent"><h2 id="recent">Recent requests</h2>
      <div class="table-wrap"><table><thead><tr><th>When</th><th>Model</th><th>Kind</th><th>Client</th><th class="num">Latency</th><th class="num">First token</th><th class="num">Tokens in/out</th><th>Result</th></tr></thead>
      <tbody>${(rows.data ?? []).map((r, i) => html`<tr key=${i}><td>${when(r.at)}</td><td>${r.model}</td><td>${r.kind}</td><td>${r.client ?? "—"}</td>
        <td class="num">${ms(r.latency * 1000)}</td><td class="num">${r.ttft === null ? "—" : ms(r.ttft * 1000)}</td><td class="num">${r.tokens_in} / ${r.tokens_out}</td>
        <td>${r.ok ? html`<span class="ok-text">ok</span>` : html`<span class="fail-text">${r.error ?? "failed"}</span>`}</td></tr>`)}</tbody></table></div>
    </section>`;
}

// ------------------------------------------------------------------ Playground

async function streamChat({ model, messages, options, signal, onDelta }) {
  const started = performance.now();
  let first = null;
  let usage = null;
  let text = "";
  const res = await api("/v1/chat/completions", {
    method: "POST", raw: true, signal,
    body: { model, messages, stream: true, stream_options: { include_usage: true }, ...options },
  });
  await readEvents(res, (name, data) => {
    if (data === "[DONE]") return;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new ApiError(500, chunk.error.message ?? String(chunk.error));
    if (chunk.usage) usage = chunk.usage;
    const delta = chunk.choices?.[0]?.delta?.content;
    if (delta) {
      first ??= performance.now();
      text += delta;
      onDelta(text);
    }
  });
  const end = performance.now();
  const tokens = usage?.completion_tokens ?? null;
  const genSeconds = first ? (end - first) / 1000 : null;
  return {
    text, latency: end - started, ttft: first ? first - started : null, tokens,
    speed: tokens && genSeconds > 0 && tokens > 1 ? (tokens - 1) / genSeconds : null,
  };
}

function Conversation({ model, label, transcript }) {
  const box = useRef(null);
  useEffect(() => {
    if (box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [transcript]);
  return html`<section class="panel" aria-label=${label}>
    <h2>${model || "no model chosen"}</h2>
    <div class="transcript" ref=${box} role="log" aria-live="polite" aria-label=${`${label} transcript`}>
      ${transcript.map((m, i) => html`<div key=${i} class="msg ${m.role} ${m.error ? "error" : ""}" data-role=${m.role}>${m.content || (m.pending ? "…" : "")}
        ${m.stats && html`<div class="stats">${ms(m.stats.latency)} total · first token ${ms(m.stats.ttft)} · ${m.stats.tokens ?? "?"} tokens · ${num(m.stats.speed)} tokens/s</div>`}</div>`)}
    </div>
  </section>`;
}

function Playground({ params }) {
  const [models, setModels] = useState([params.get("model") ?? "", ""]);
  const [compare, setCompare] = useState(false);
  const [system, setSystem] = useState("");
  const [temperature, setTemperature] = useState(""); // empty: the model's own default
  const [maxTokens, setMaxTokens] = useState("");
  const [prompt, setPrompt] = useState("");
  const [transcripts, setTranscripts] = useState([[], []]);
  const [busy, setBusy] = useState(false);
  const control = useRef(null);
  const chat = useData("/api/v1/models?task=chat&limit=1000&order_by=id");
  const sides = compare ? [0, 1] : [0];
  const update = (side, fn) => setTranscripts((all) => all.map((t, i) => (i === side ? fn(t) : t)));
  const send = async (e) => {
    e?.preventDefault();
    const text = prompt.trim();
    if (!text || busy || !models[0] || (compare && !models[1])) return;
    setPrompt("");
    setBusy(true);
    control.current = new AbortController();
    const options = {};
    if (temperature !== "") options.temperature = Number(temperature);
    if (maxTokens !== "") options.max_tokens = Number(maxTokens);
    await Promise.all(sides.map(async (side) => {
      const history = transcripts[side].filter((m) => !m.error).map(({ role, content }) => ({ role, content }));
      const messages = [...(system ? [{ role: "system", content: system }] : []), ...history, { role: "user", content: text }];
      update(side, (t) => [...t, { role: "user", content: text }, { role: "assistant", content: "", pending: true }]);
      const set = (fields) => update(side, (t) => [...t.slice(0, -1), { ...t.at(-1), ...fields }]);
      try {
        const stats = await streamChat({ model: models[side], messages, options, signal: control.current.signal, onDelta: (content) => set({ content }) });
        set({ pending: false, stats });
      } catch (err) {
        set({ pending: false, error: true, content: err.name === "AbortError" ? "stopped" : err.message });
      }
    }));
    setBusy(false);
  };
  const keys = (e) => {
    if (e.key === "Enter" && !e.shiftKey) send(e);
  };
  const choose = (side) => (e) => setModels((m) => m.map((v, i) => (i === side ? e.target.value.trim() : v)));
  return html`<h1>Playground</h1>
    <section class="panel" aria-label="Settings">
      <div class="filters">
        <label class="field">Model <input list="chat-models" value=${models[0]} onInput=${choose(0)} placeholder="id or alias" /></label>
        <label class="check"><input type="checkbox" checked=${compare} onChange=${(e) => setCompare(e.target.checked)} /> compare with a second model</label>
        ${compare && html`<label class="field">Second model <input list="chat-models" value=${models[1]} onInput=${choose(1)} placeholder="id or alias" /></label>`}
        <label class="field">Temperature <input type="number" min="0" max="2" step="0.1" value=${temperature} placeholder="default" onInput=${(e) => setTemperature(e.target.value)} size="6" /></label>
        <label class="field">Max tokens <input type="number" min="1" value=${maxTokens} placeholder="default" onInput=${(e) => setMaxTokens(e.target.value)} size="6" /></label>
        <button onClick=${() => setTranscripts([[], []])}>Clear</button>
      </div>
      <datalist id="chat-models">${(chat.data?.models ?? []).map((m) => html`<option value=${m.id} />`)}</datalist>
      <label class="field">System prompt <textarea rows="2" value=${system} onInput=${(e) => setSystem(e.target.value)}></textarea></label>
    </section>
    <div class="chat" style="margin-top:1rem">
      ${sides.map((side) => html`<${Conversation} key=${side} model=${models[side]} label=${side ? "second model" : "first model"} transcript=${transcripts[side]} />`)}
    </div>
    <form class="panel" style="margin-top:1rem" onSubmit=${send}>
      <label class="field">Message <textarea rows="3" value=${prompt} onInput=${(e) => setPrompt(e.target.value)} onKeyDown=${keys}
        placeholder="Enter sends, Shift+Enter starts a new line"></textarea></label>
      <div class="row" style="margin-top:0.5rem">
        <button class="primary" type="submit" disabled=${busy || !models[0]}>Send</button>
        ${busy && html`<button type="button" onClick=${() => control.current?.abort()}>Stop</button>`}
        ${!models[0] && html`<span class="muted">Choose a model first.</span>`}
      </div>
    </form>`;
}

// ------------------------------------------------------------------ Doctor

function Doctor() {
  const report = useData("/api/v1/doctor");
  const findings = report.data?.findings ?? [];
  return html`<h1>Doctor</h1>
    <div class="row" style="margin-bottom:1rem">
      ${report.data && html`<span><span class="badge ok">${report.data.counts.ok} ok</span> <span class="badge warn">${report.data.counts.warn} to improve</span> <span class="badge fail">${report.data.counts.fail} failing</span></span>`}
      <span class="spacer"></span><button onClick=${report.refresh}>Check again</button>
    </div>
    <${ErrorBox} error=${report.error} />
    ${report.loading && html`<p class="muted">Checking…</p>`}
    <section class="panel"><ul style="list-style:none;padding:0;margin:0">
      ${findings.map((f, i) => html`<li key=${i} style="padding:0.5rem 0;border-bottom:1px solid var(--line)">
        <span class="badge ${f.level}">${f.level}</span> <strong>${f.area}</strong>: ${f.message}
        ${f.step && html`<div class="muted" style="margin-top:0.25rem">→ ${f.step}</div>`}</li>`)}
    </ul></section>`;
}

// ------------------------------------------------------------------ the shell

function KeyDialog() {
  const dialog = useRef(null);
  const [, redraw] = useState(0);
  const [key, setKey] = useState("");
  useEffect(() => {
    const f = () => redraw((n) => n + 1);
    keyPrompt.listeners.add(f);
    return () => keyPrompt.listeners.delete(f);
  }, []);
  useEffect(() => {
    if (keyPrompt.open && !dialog.current.open) dialog.current.showModal();
    if (!keyPrompt.open && dialog.current.open) dialog.current.close();
  });
  return html`<dialog ref=${dialog} aria-labelledby="key-title" onCancel=${(e) => e.preventDefault()}>
    <form onSubmit=${(e) => (e.preventDefault(), keyGiven(key.trim()), setKey(""))}>
      <h2 id="key-title">API key</h2>
      <p>${keyPrompt.reason}</p>
      <p class="muted">It is kept in this browser only and sent with each request as a bearer header (never as a cookie).</p>
      <label class="field">API key <input type="password" autocomplete="current-password" value=${key} onInput=${(e) => setKey(e.target.value)} required /></label>
      <div class="row" style="margin-top:1rem"><button class="primary" type="submit">Use this key</button></div>
    </form>
  </dialog>`;
}

function ThemeButton() {
  const [theme, setTheme] = useState(localStorage.getItem("modelctl.theme") ?? "");
  useEffect(() => {
    if (theme) document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
    localStorage.setItem("modelctl.theme", theme);
  }, [theme]);
  const next = { "": "dark", dark: "light", light: "" }[theme];
  return html`<button onClick=${() => setTheme(next)} aria-label=${`theme: ${theme || "system"}; switch to ${next || "system"}`}>
    ${{ "": "◐ System", dark: "☾ Dark", light: "☀ Light" }[theme]}</button>`;
}

function App() {
  const route = useRoute();
  const live = useLive();
  const first = useRef(true);
  useEffect(() => {
    document.title = `${PAGES.find(([p]) => p === route.page)?.[1] ?? "modelctl"} · modelctl`;
    // a new page: focus goes to its content (not on the first, so Tab reaches "Skip" first)
    if (!first.current) document.getElementById("main")?.focus({ preventScroll: true });
    first.current = false;
  }, [route.page, route.rest]);
  let page;
  if (route.page === "models" && route.rest) page = html`<${ModelPage} key=${route.rest} id=${route.rest} />`;
  else if (route.page === "models") page = html`<${Models} key=${route.params.toString()} params=${route.params} />`;
  else if (route.page === "running") page = html`<${Running} />`;
  else if (route.page === "usage") page = html`<${Usage} key=${route.params.toString()} params=${route.params} />`;
  else if (route.page === "playground") page = html`<${Playground} params=${route.params} />`;
  else if (route.page === "doctor") page = html`<${Doctor} />`;
  else if (route.page === "overview") page = html`<${Overview} />`;
  else page = html`<h1>Not found</h1><p>No page at #/${route.page}. <a href="#/overview">Overview</a></p>`;
  return html`<a class="skip" href="#main" onClick=${(e) => (e.preventDefault(), document.getElementById("main").focus())}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/overview">modelctl</a>
      <nav aria-label="Pages"><ul>${PAGES.map(([p, label]) => html`<li><a href=${`#/${p}`} aria-current=${route.page === p ? "page" : undefined}>${label}</a></li>`)}</ul></nav>
      <div class="tools">
        <span class="live ${live ? "on" : ""}" role="status">${live ? "live" : "reconnecting"}</span>
        <${ThemeButton} />
        <button onClick=${() => askKey("Enter the server's API key.")} aria-label="set the API key">Key</button>
      </div>
    </header>
    <main id="main" tabindex="-1">${page}</main>
    <${KeyDialog} />
    <${Toast} />`;
}

const theme = localStorage.getItem("modelctl.theme");
if (theme) document.documentElement.dataset.theme = theme;
const root = document.getElementById("app");
root.textContent = ""; // the "Loading" line
render(html`<${App} />`, root);
followEvents();
