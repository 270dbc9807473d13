// The review page: one event at a time, least confident first. Event data is untrusted: the DOM
// is built with textContent and createElement only, never markup from data.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  task: "informative",
  current: null,
  marks: new Map(), // "start:end" -> {start, end, token, right}
  skipped: new Set(),
  undo: [], // feedback ids of this page's answers, newest last
  busy: false,
  poll: null,
};

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function status(message, error) {
  $("status").textContent = message;
  $("status").className = error ? "error" : "";
}

function annotator() {
  return $("annotator").value.trim() || "analyst";
}

// Offsets are Unicode code points (as the worker writes them), not UTF-16 units.
function renderText(ev) {
  const box = $("text");
  box.replaceChildren();
  box.lang = ev.lang || "";
  const chars = Array.from(ev.text);
  const top = Math.max(1e-9, ...ev.spans.map((s) => Math.abs(s.weight)));
  let pos = 0;
  for (const span of ev.spans) {
    box.append(chars.slice(pos, span.start).join(""));
    const mark = el("mark", chars.slice(span.start, span.end).join(""));
    const alpha = (0.15 + 0.6 * Math.abs(span.weight) / top).toFixed(2);
    mark.style.backgroundColor = span.weight >= 0
      ? `rgba(9, 105, 218, ${alpha})` : `rgba(207, 34, 46, ${alpha})`;
    mark.className = span.weight >= 0 ? "pos" : "neg";
    mark.title = `weight ${span.weight.toFixed(3)}`;
    mark.addEventListener("click", () => toggleMark(mark, span));
    box.append(mark);
    pos = span.end;
  }
  box.append(chars.slice(pos).join(""));
}

// Unmarked -> a right reason -> a wrong reason -> unmarked.
function toggleMark(mark, span) {
  const key = `${span.start}:${span.end}`;
  const now = state.marks.get(key);
  mark.classList.remove("right", "wrong");
  if (now === undefined) {
    state.marks.set(key, { start: span.start, end: span.end, token: mark.textContent, right: true });
    mark.classList.add("right");
  } else if (now.right) {
    now.right = false;
    mark.classList.add("wrong");
  } else {
    state.marks.delete(key);
  }
}

function renderImage(ev) {
  const list = $("cells");
  list.replaceChildren();
  for (const c of ev.cells) {
    const concept = c.concept ? ` ${c.concept}` : "";
    list.append(el("li", `image cell x ${c.x}, y ${c.y}, ${c.w}×${c.h}, weight ${c.weight.toFixed(3)}${concept}`));
  }
  const figure = $("figure");
  const frame = $("frame");
  const img = $("image");
  frame.querySelectorAll(".box").forEach((b) => b.remove());
  figure.hidden = true;
  if (!ev.image_url) { img.removeAttribute("src"); return; }
  img.onerror = () => { figure.hidden = true; };
  img.onload = () => {
    figure.hidden = false;
    const scale = img.clientWidth / (img.naturalWidth || 1);
    for (const c of ev.cells) {
      const box = el("div", undefined, c.weight >= 0 ? "box" : "box neg");
      box.style.left = `${c.x * scale}px`;
      box.style.top = `${c.y * scale}px`;
      box.style.width = `${c.w * scale}px`;
      box.style.height = `${c.h * scale}px`;
      box.title = c.concept || "";
      frame.append(box);
    }
  };
  img.src = ev.image_url;
}

function renderChoices(ev) {
  const choices = $("choices");
  choices.replaceChildren();
  ev.choices.forEach((label, i) => {
    const button = el("button", undefined, label === ev.label ? "shown" : "");
    button.type = "button";
    if (i < 9) button.append(el("kbd", String(i + 1)));
    button.append(label);
    button.addEventListener("click", () => answer(i));
    choices.append(button);
  });
}

function show(ev) {
  state.current = ev;
  state.marks = new Map();
  $("card").hidden = !ev;
  if (!ev) return;
  const when = ev.created_at ? ` · ${ev.created_at}` : "";
  $("meta").textContent = `${ev.id} · ${ev.event || "no event"} · ${ev.lang || "?"}${when}`;
  renderText(ev);
  const m = ev.model;
  $("model").textContent = `Model: ${ev.label} (${ev.score.toFixed(3)}) · ${m.bundle} ${m.version}`;
  const others = Object.entries(ev.tasks).filter(([t]) => t !== ev.task);
  $("others").textContent = others.map(([t, v]) => `${t}: ${v.label} (${v.score.toFixed(2)})`).join(" · ");
  renderImage(ev);
  renderChoices(ev);
}

async function next() {
  clearTimeout(state.poll);
  const limit = Math.min(500, 50 + state.skipped.size);
  const data = await api(`/api/queue?task=${encodeURIComponent(state.task)}&limit=${limit}`);
  const ev = data.events.find((e) => !state.skipped.has(e.id)) || null;
  show(ev);
  if (!ev) {
    const skipped = state.skipped.size ? ` (${state.skipped.size} skipped: reload to see them)` : "";
    status(`Nothing to review for ${state.task}${skipped}.`);
    state.poll = setTimeout(() => next().catch((e) => status(e.message, true)), 3000);
  }
}

async function refreshProgress() {
  const data = await api("/api/progress");
  const select = $("task");
  const tasks = Object.keys(data.tasks);
  if (!tasks.includes(state.task)) tasks.push(state.task);
  if (select.options.length !== tasks.length) {
    select.replaceChildren(...tasks.sort().map((t) => el("option", t)));
    select.value = state.task;
  }
  const p = data.tasks[state.task];
  if (!p) { $("progress").textContent = "No events yet."; return; }
  const agreement = p.agreement === null ? "–" : `${Math.round(100 * p.agreement)}%`;
  $("progress").textContent =
    `Queue ${p.queue} · answered today ${p.answered_today} (${p.answered} in all) · agreement with the model ${agreement}`;
}

// Every action runs one at a time; its result (or error) lands in the status line.
async function act(work) {
  if (state.busy) return;
  state.busy = true;
  try {
    await work();
    await refreshProgress();
  } catch (error) {
    status(error.message, true);
  } finally {
    state.busy = false;
  }
}

function answer(index) {
  const ev = state.current;
  if (!ev || index >= ev.choices.length) return;
  act(async () => {
    const label = ev.choices[index];
    const saved = await api("/api/feedback", {
      event_id: ev.id, task: ev.task, label, annotator: annotator(),
      words: Array.from(state.marks.values()),
    });
    state.undo.push(saved.id);
    status(`Saved ${ev.id}: ${label}`);
    await next();
  });
}

function skip() {
  if (!state.current) return;
  act(async () => {
    state.skipped.add(state.current.id);
    status(`Skipped ${state.current.id}`);
    await next();
  });
}

function undo() {
  if (!state.undo.length) { status("Nothing to undo."); return; }
  act(async () => {
    const id = state.undo[state.undo.length - 1];
    const done = await api("/api/undo", { feedback_id: id, annotator: annotator() });
    state.undo.pop();
    if (done.event) {
      state.skipped.delete(done.event.id);
      clearTimeout(state.poll);
      show(done.event);
      status(`Undone: ${done.event.id} is back`);
    } else {
      status("Undone");
      await next();
    }
  });
}

function onKey(event) {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement) return;
  if (/^[1-9]$/.test(event.key)) answer(Number(event.key) - 1);
  else if (event.key === "s") skip();
  else if (event.key === "u") undo();
  else return;
  event.preventDefault();
}

function start() {
  const stored = localStorage.getItem("crisis-review-annotator");
  $("annotator").value = stored || "analyst";
  $("annotator").addEventListener("change", () => {
    localStorage.setItem("crisis-review-annotator", annotator());
  });
  const asked = new URLSearchParams(location.search).get("task");
  state.task = asked || localStorage.getItem("crisis-review-task") || "informative";
  $("task").addEventListener("change", () => {
    state.task = $("task").value;
    localStorage.setItem("crisis-review-task", state.task);
    state.skipped.clear();
    act(next);
  });
  document.addEventListener("keydown", onKey);
  act(next);
  setInterval(() => refreshProgress().catch(() => {}), 5000);
}

start();
