// The host UI's only script. Pages work without it; it adds:
// - live updates: one EventSource on the page's feed (`data-events`); news
//   re-fetches this page and swaps its `data-live` regions (keeping focus,
//   and leaving alone a region whose form is being filled in), and log
//   lines are appended straight from their events;
// - "3 s ago" times that keep counting, and "running for" durations;
// - times in the reader's time zone (`data-local`: the server writes UTC);
// - the browser's UTC offset in the run list's filter form (its days);
// - log filters (stream, text) applied to live lines too;
// - a question before destructive actions (`data-confirm`);
// - copy buttons (`data-copy`);
// - the browser's time zone offset sent with a local start time, and the
//   focus on a refused form's error summary (`data-focus`).
(() => {
  "use strict";
  const body = document.body;

  // Times are relative to the server's clock, whatever the browser's says.
  const skew = Date.parse(body.dataset.now) - Date.now() || 0;
  function relative(ms) {
    const s = Math.trunc(ms / 1000), a = Math.abs(s);
    const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.trunc(a / 60)} min`
      : a < 86400 ? `${Math.trunc(a / 3600)} h` : `${Math.trunc(a / 86400)} d`;
    return s < 0 ? `in ${text}` : `${text} ago`;
  }
  // As the server's `view::duration` words it.
  function duration(ms) {
    ms = Math.max(0, ms);
    const s = Math.trunc(ms / 1000);
    return ms < 1000 ? `${ms} ms` : s < 60 ? `${s} s`
      : s < 3600 ? `${Math.trunc(s / 60)} min ${s % 60} s`
      : s < 86400 ? `${Math.trunc(s / 3600)} h ${Math.trunc(s % 3600 / 60)} min`
      : `${Math.trunc(s / 86400)} d ${Math.trunc(s % 86400 / 3600)} h`;
  }
  function tick() {
    const now = Date.now() + skew;
    for (const t of document.querySelectorAll("time[data-ago]")) {
      t.textContent = relative(now - Date.parse(t.dateTime));
    }
    for (const d of document.querySelectorAll("[data-running]")) {
      d.textContent = `running for ${duration(now - Date.parse(d.dataset.running))}`;
    }
  }
  setInterval(tick, 1000);

  // Local times: "2026-01-31 13:00:05 GMT+1", or a log line's clock
  // "13:00:05.123"; the title keeps the UTC time the server wrote.
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const zone = (date) => {
    const part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
      .formatToParts(date).find((p) => p.type === "timeZoneName");
    return part ? part.value : "";
  };
  function localText(date, clock) {
    const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
    if (clock) return `${time}.${pad(date.getMilliseconds(), 3)}`;
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time} ${zone(date)}`;
  }
  function localize(root) {
    for (const t of root.querySelectorAll("time[data-local]")) {
      const date = new Date(t.dateTime);
      if (!isNaN(date)) t.textContent = localText(date, t.dataset.local === "clock");
    }
  }
  localize(document);
  // The run list's days are the reader's days: the form says whose.
  for (const tz of document.querySelectorAll("form#run-filters input[name=tz]")) {
    if (!tz.value) tz.value = String(-new Date().getTimezoneOffset());
  }

  document.addEventListener("submit", (event) => {
    const question = event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // The Clipboard API needs a secure context (https, or a loopback
  // address); elsewhere the old `execCommand` path still works.
  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.append(area);
      area.select();
      const done = document.execCommand("copy");
      area.remove();
      return done;
    }
  }
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-copy]");
    if (!button) return;
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = (await copy(button.dataset.copy)) ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = label; }, 2000);
  });

  // A start time typed in the browser's zone (`data-local-time`) goes with
  // that zone's offset on its date, for the server to make it UTC.
  document.addEventListener("submit", (event) => {
    for (const input of event.target.querySelectorAll("input[data-local-time]")) {
      const offset = event.target.querySelector(`input[name="${input.dataset.localTime}"]`);
      if (offset && input.value) offset.value = String(new Date(input.value).getTimezoneOffset());
    }
  });

  // A refused form's error summary takes the focus: read at once, in view.
  const summary = document.querySelector("[data-focus]");
  if (summary) summary.focus();

  const feed = body.dataset.events;
  if (!feed || !window.EventSource) return;

  // A region is swapped only while nobody is in the middle of it: one with
  // a field being typed in, or changed and not yet sent, stays as it is
  // (and is refreshed once the field is left); a focused button or link
  // gets the focus back on its counterpart in the fresh region.
  function editing(region) {
    const active = document.activeElement;
    if (active && region.contains(active)
      && active.matches("input:not([type=hidden]), textarea, select")) return true;
    for (const field of region.querySelectorAll("input:not([type=hidden]), textarea")) {
      if (field.value !== field.defaultValue) return true;
    }
    for (const option of region.querySelectorAll("option")) {
      if (option.selected !== option.defaultSelected) return true;
    }
    return false;
  }
  function focusKey(element) {
    if (element.id) return `#${CSS.escape(element.id)}`;
    const tag = element.tagName.toLowerCase();
    const form = element.closest("form[action]");
    if (form) return `form[action="${CSS.escape(form.getAttribute("action"))}"] ${tag}`;
    if (element.dataset.copy) return `${tag}[data-copy="${CSS.escape(element.dataset.copy)}"]`;
    if (element.matches("a[href]")) return `a[href="${CSS.escape(element.getAttribute("href"))}"]`;
    return null;
  }
  let held = false;
  document.addEventListener("focusout", () => { if (held) { held = false; soon(); } });

  let inFlight = false, again = false, timer = null;
  async function refresh() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    try {
      const answer = await fetch(location.href, { headers: { Accept: "text/html" } });
      if (answer.ok && !answer.redirected) {
        const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
        for (const region of document.querySelectorAll("[data-live][id]")) {
          const replacement = fresh.getElementById(region.id);
          if (!replacement) continue;
          if (editing(region)) { held = true; continue; }
          const active = document.activeElement;
          const focused = active && region.contains(active) ? focusKey(active) : null;
          // A section someone opened (Edit schedule, Edit pool) stays open.
          const opened = [...region.querySelectorAll("details[open][id]")].map((d) => d.id);
          region.replaceWith(document.adoptNode(replacement));
          localize(replacement);
          for (const id of opened) {
            const details = document.getElementById(id);
            if (details) details.open = true;
          }
          const again = focused && replacement.querySelector(focused);
          if (again) again.focus({ preventScroll: true });
        }
        tick();
        body.dataset.refreshed = String(Date.now());
      }
    } catch (_) {
      // The server is away; the stream's reconnect brings the next refresh.
    } finally {
      inFlight = false;
      if (again) { again = false; soon(); }
    }
  }
  // Changes come in bursts: one refresh per burst is enough.
  function soon() {
    if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 100);
  }

  const logs = document.getElementById("logs");
  function lastSeq() {
    const last = logs && logs.lastElementChild;
    return last ? Number(last.dataset.seq) : -1;
  }
  // The page's log filter, as the server applied it to the page's lines.
  function shown(line) {
    const stream = logs.dataset.stream, text = logs.dataset.q;
    return (!stream || line.stream === stream)
      && (!text || line.message.toLowerCase().includes(text));
  }
  // As the server renders a line: its local time to the millisecond, then the message.
  function append(line) {
    if (!logs.hasAttribute("data-follow") || line.seq <= lastSeq() || !shown(line)) return;
    const stick = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    const span = document.createElement("span");
    span.className = `line ${line.stream}`;
    span.dataset.seq = line.seq;
    const time = document.createElement("time");
    time.className = "ts";
    time.dateTime = line.timestamp;
    time.dataset.local = "clock";
    time.textContent = localText(new Date(line.timestamp), true);
    time.title = line.timestamp;
    const message = document.createElement("span");
    message.className = "msg";
    message.textContent = line.message;
    span.append(time, " ", message, "\n");
    logs.append(span);
    if (stick) logs.scrollTop = logs.scrollHeight;
  }
  // Lines written between the page's rendering and the stream's start.
  async function catchUp() {
    if (!logs || !logs.hasAttribute("data-follow")) return;
    const after = lastSeq();
    const query = after >= 0 ? `?after=${after}` : "";
    try {
      const answer = await fetch(`/api/flow-runs/${encodeURIComponent(logs.dataset.run)}/logs${query}`);
      if (answer.ok) (await answer.json()).lines.forEach(append);
    } catch (_) { /* the next event or reconnect tries again */ }
  }

  const indicator = document.getElementById("live-indicator");
  let source = null;
  function connect() {
    source = new EventSource(feed);
    source.onopen = () => { indicator.hidden = false; soon(); catchUp(); };
    source.onerror = () => { indicator.hidden = true; };
    for (const name of ["run", "run_deleted", "worker", "pool", "pool_deleted"]) source.addEventListener(name, soon);
    source.addEventListener("reset", () => { soon(); catchUp(); });
    source.addEventListener("log", (event) => {
      if (logs) append(JSON.parse(event.data).line);
    });
  }
  // A browser holds 6 connections per server: a page left behind must
  // give its stream back (and one restored from history takes a new one).
  window.addEventListener("pagehide", () => { if (source) source.close(); source = null; });
  window.addEventListener("pageshow", (event) => { if (event.persisted || !source) connect(); });
  connect();
  // A worker that stops sending heartbeats goes OFFLINE without an event.
  setInterval(soon, 10000);
})();
