// The labelling page: keyboard-first, no page reloads.
// The server is the source of truth: every answer returns the next task and
// the annotator's own count, so the page never guesses what comes next.
//
// Every key and click becomes an action in one queue, performed in order, one
// request at a time. A key pressed while a label is being saved waits its
// turn and applies to the item that answer brings, so a fast burst of keys
// saves every label, each on its own item, and the counters stay exact.
//
// A failed request says what was not saved, why (offline, session expired,
// not allowed, server error, server unavailable), and what to do. The actions
// queued behind it are dropped, and the message says how many: they were
// meant for items that never came, and applying them to the item still shown
// would label it with a key meant for another.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("label-config").textContent);
  const byId = (id) => document.getElementById(id);
  const body = byId("item-body");
  const itemId = byId("item-id");
  const statusEl = byId("status");
  const totalEl = byId("count-total");
  const sessionEl = byId("count-session");
  const undoBtn = byId("undo-btn");
  const undoLeft = byId("undo-left");
  const skipBtn = byId("skip-btn");
  const confirmBtn = byId("confirm-btn");
  const retryBtn = byId("retry-btn");
  const helpBtn = byId("help-btn");
  const help = byId("shortcuts");
  const helpClose = byId("shortcuts-close");
  const keyHint = byId("key-hint");
  const queueInfo = byId("queue-info");
  const buttons = Array.from(document.querySelectorAll(".class-btn"));

  const HINT_MS = 1800;

  let task = null;
  let selected = null;
  let shownAt = performance.now();
  let sessionCount = 0;
  let undoUntil = 0;
  let undoTimer = null;
  let hintTimer = null;
  let retryAction = null;
  let helpReturnFocus = null;
  const queue = [];
  let draining = false;

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // ``parts``: strings, or {href, text} for a link. Always text, never HTML.
  function setStatus(parts, kind) {
    const nodes = (Array.isArray(parts) ? parts : [parts || ""]).map((part) =>
      typeof part === "string" ? document.createTextNode(part) : el("a", { href: part.href }, part.text)
    );
    statusEl.replaceChildren(...nodes);
    statusEl.className = "status" + (kind ? " status-" + kind : "");
    statusEl.dataset.kind = kind || "";
  }

  function flashHint(parts) {
    keyHint.replaceChildren(...parts.map((part) => (typeof part === "string" ? document.createTextNode(part) : el("kbd", {}, part.kbd))));
    keyHint.hidden = false;
    clearTimeout(hintTimer);
    hintTimer = setTimeout(() => (keyHint.hidden = true), HINT_MS);
  }

  function showQueue() {
    document.body.dataset.queued = String(queue.length);
    queueInfo.hidden = queue.length === 0;
    queueInfo.textContent = queue.length === 1 ? "1 key waiting…" : queue.length + " keys waiting…";
  }

  // Content is inserted as text or element attributes, never as HTML:
  // item text comes from uploads and must not run in the annotator's page.
  function renderItem(item) {
    body.replaceChildren();
    itemId.textContent = "Item " + item.external_id;
    if (item.kind === "image" && item.src) {
      body.append(el("img", { src: item.src, alt: "Item " + item.external_id, class: "item-image" }));
    } else if (item.kind === "audio" && item.src) {
      body.append(el("audio", { src: item.src, controls: "", preload: "auto", class: "item-audio" }));
    } else if (item.kind === "json") {
      body.append(el("pre", { class: "item-json" }, item.json));
    }
    if (item.text) body.append(el("div", { class: "item-text", "data-testid": "item-text" }, item.text));
  }

  function render(data) {
    totalEl.textContent = data.done;
    task = data.task;
    selected = null;
    buttons.forEach((b) => b.classList.remove("selected", "unsaved"));
    if (confirmBtn) confirmBtn.disabled = true;
    if (!task) {
      body.replaceChildren(el("p", { class: "done-message" }, data.message || "Nothing left to label."));
      itemId.textContent = "";
      buttons.forEach((b) => (b.disabled = true));
      skipBtn.disabled = true;
      document.body.dataset.state = "empty";
    } else {
      renderItem(task.item);
      buttons.forEach((b) => (b.disabled = false));
      skipBtn.disabled = false;
      document.body.dataset.state = "ready";
      document.body.dataset.assignment = String(task.assignment_id);
    }
    shownAt = performance.now();
  }

  // ------------------------------------------------------------------ requests

  function isLoginPage(response) {
    if (!response.redirected) return false;
    try {
      return new URL(response.url).pathname === new URL(config.login_url, window.location.href).pathname;
    } catch (error) {
      return false;
    }
  }

  async function readJson(response) {
    if (!(response.headers.get("Content-Type") || "").includes("application/json")) return null;
    try {
      return await response.json();
    } catch (error) {
      return null;
    }
  }

  // The answer's data, or why there is none: {failure: {kind, status, message}}.
  async function outcome(response) {
    // login_required answers a logged-out fetch with a redirect to the login page.
    if (response.status === 401 || isLoginPage(response)) return { failure: { kind: "session", status: 401 } };
    const data = await readJson(response);
    if (response.ok) return data ? { data: data } : { failure: { kind: "unexpected", status: response.status } };
    const message = data && (data.error || data.detail);
    const status = response.status;
    let kind = "rejected";
    if (status === 403) kind = message ? "forbidden" : "csrf"; // Django's CSRF refusal is an HTML page
    else if (status === 404) kind = message ? "gone" : "missing";
    else if (status === 500) kind = "server";
    else if (status === 502 || status === 503 || status === 504) kind = "unavailable";
    else if (status > 500) kind = "server";
    return { failure: { kind: kind, status: status, message: message } };
  }

  async function post(action, url, payload) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
        body: JSON.stringify(payload || {}),
      });
    } catch (error) {
      // fetch rejects only when no answer came at all: offline, DNS, refused, reset.
      fail(action, { kind: "network", detail: error && error.message });
      return null;
    }
    const result = await outcome(response);
    if (result.failure) {
      fail(action, result.failure);
      return null;
    }
    return result.data;
  }

  // What the failed action would have done, in words.
  function lost(action) {
    switch (action.type) {
      case "submit":
        return "“" + action.label + "” for item " + action.item + " was not saved";
      case "skip":
        return "Item " + action.item + " was not skipped";
      case "undo":
        return "Your last label was not undone";
      default:
        return "The next item could not be loaded";
    }
  }

  function again(action) {
    return action.type === "next" ? "press Try again" : "try again";
  }

  // How to redo the action once the page works again.
  function redo(action) {
    return { submit: ", then label this item again.", skip: ", then skip it again.", undo: ", then undo again." }[action.type] || ".";
  }

  function fail(action, failure) {
    const dropped = queue.splice(0).length;
    showQueue();
    if (action.type === "submit") {
      buttons.forEach((b) => b.classList.toggle("unsaved", b.dataset.label === action.label));
    }
    const retryable = ["network", "server", "unavailable", "unexpected"].includes(failure.kind);
    const relogin = { href: config.login_url + "?next=" + encodeURIComponent(config.page_url), text: "Log in again" };
    const reload = { href: config.page_url, text: "Reload the page" };
    const what = lost(action);
    let parts;
    switch (failure.kind) {
      case "network":
        parts = [what + ": no connection to the server (network error" + (failure.detail ? ": " + failure.detail : "") +
          "). Check your connection, then " + again(action) + "."];
        break;
      case "session":
        parts = [what + ": your session has expired. ", relogin, redo(action)];
        break;
      case "csrf":
        parts = [what + ": not allowed (403): this page's security token is missing or out of date. ", reload,
          redo(action)];
        break;
      case "forbidden":
        parts = [what + ": not allowed (403): " + failure.message];
        break;
      case "gone":
        parts = [what + " (404): " + failure.message];
        break;
      case "missing":
        parts = [what + ": not found (404): this project is no longer open to you. ", reload, "."];
        break;
      case "server":
        parts = [what + ": the server had an internal error (" + failure.status + "). " +
          again(action).charAt(0).toUpperCase() + again(action).slice(1) + "; if it keeps failing, tell the project's owner."];
        break;
      case "unavailable":
        parts = [what + ": the server is unavailable right now (" + failure.status + "). Wait a moment, then " +
          again(action) + "."];
        break;
      case "unexpected":
        parts = [what + ": the server's answer was not what this page expects (" + failure.status + "). " +
          "Try again, or reload the page."];
        break;
      default:
        parts = [what + " (" + failure.status + "): " + (failure.message || "the server refused it.")];
    }
    if (dropped) {
      parts.push(" " + (dropped === 1 ? "1 more key you pressed after it was" : dropped + " more keys you pressed after it were") +
        " not applied.");
    }
    setStatus(parts, "error");
    document.body.dataset.failure = failure.kind;
    retryAction = retryable ? action : null;
    retryBtn.hidden = !retryable;
    if ((failure.kind === "forbidden" || failure.kind === "gone") && action.type !== "next") {
      // The lease lapsed or the task went elsewhere: bring a fresh one.
      statusEl.append(" A new item is shown.");
      queue.push({ type: "next" });
    }
  }

  // ------------------------------------------------------------------ actions

  function startUndoWindow() {
    undoUntil = Date.now() + config.undo_seconds * 1000;
    undoBtn.hidden = false;
    clearInterval(undoTimer);
    const tick = () => {
      const left = Math.ceil((undoUntil - Date.now()) / 1000);
      if (left <= 0) {
        undoBtn.hidden = true;
        clearInterval(undoTimer);
        return;
      }
      undoLeft.textContent = "(" + left + " s)";
    };
    tick();
    undoTimer = setInterval(tick, 250);
  }

  function select(label) {
    selected = label;
    buttons.forEach((b) => {
      b.classList.toggle("selected", b.dataset.label === label);
      b.classList.remove("unsaved");
    });
    if (confirmBtn) confirmBtn.disabled = false;
    setStatus("Press Enter to confirm “" + label + "”.", "info");
  }

  async function submit(label) {
    const action = { type: "submit", label: label, item: task.item.external_id };
    const data = await post(action, config.submit_url, {
      assignment_id: task.assignment_id,
      label: label,
      time_spent_ms: Math.round(performance.now() - shownAt),
    });
    if (!data) return;
    sessionCount += 1;
    sessionEl.textContent = sessionCount;
    setStatus("Saved “" + data.submitted.label + "” for item " + data.submitted.item + ".", "ok");
    render(data);
    startUndoWindow();
  }

  async function skip() {
    const action = { type: "skip", item: task.item.external_id };
    const data = await post(action, config.skip_url, { assignment_id: task.assignment_id });
    if (!data) return;
    setStatus("Skipped item " + action.item + ".", "info");
    render(data);
  }

  async function undo() {
    if (Date.now() > undoUntil) {
      flashHint(["Nothing to undo: ", { kbd: "U" }, " works for " + config.undo_seconds + " s after a label."]);
      return;
    }
    const data = await post({ type: "undo" }, config.undo_url, {});
    undoBtn.hidden = true;
    clearInterval(undoTimer);
    undoUntil = 0;
    if (!data) return;
    sessionCount = Math.max(0, sessionCount - 1);
    sessionEl.textContent = sessionCount;
    setStatus("Undone: label this item again.", "info");
    render(data);
  }

  async function loadNext() {
    const data = await post({ type: "next" }, config.next_url, {});
    if (data) render(data);
  }

  function noItem() {
    flashHint([document.body.dataset.state === "empty" ? "Nothing left to label here." : "No item is shown right now."]);
  }

  // One action, against the task shown when its turn comes.
  async function perform(action) {
    switch (action.type) {
      case "next":
        return loadNext();
      case "undo":
        return undo();
      case "choose":
        if (!task) return noItem();
        if (config.confirm) return select(action.label);
        return submit(action.label);
      case "confirm":
        if (!task) return noItem();
        if (!selected) return flashHint(["Choose a class first, then press ", { kbd: "Enter" }, "."]);
        return submit(selected);
      case "skip":
        if (!task) return noItem();
        return skip();
    }
  }

  function enqueue(action) {
    // A new action replaces the offer to retry the failed one.
    retryAction = null;
    retryBtn.hidden = true;
    delete document.body.dataset.failure;
    queue.push(action);
    showQueue();
    if (!draining) drain();
  }

  async function drain() {
    draining = true;
    document.body.dataset.busy = "1";
    try {
      while (queue.length) {
        const action = queue.shift();
        showQueue();
        try {
          await perform(action);
        } catch (error) {
          // A bug here must not wedge the queue, nor pass unnoticed.
          queue.splice(0);
          setStatus("Something went wrong in this page (" + error + "). Reload the page.", "error");
        }
      }
    } finally {
      draining = false;
      delete document.body.dataset.busy;
      showQueue();
    }
  }

  // ------------------------------------------------------------------ help overlay

  function helpOpen() {
    return !help.hidden;
  }

  function openHelp() {
    helpReturnFocus = document.activeElement;
    help.hidden = false;
    helpClose.focus();
  }

  function closeHelp() {
    help.hidden = true;
    if (helpReturnFocus && helpReturnFocus.focus) helpReturnFocus.focus();
  }

  // ------------------------------------------------------------------ wiring

  const byKey = new Map();
  buttons.forEach((button) => {
    if (button.dataset.key) byKey.set(button.dataset.key.toLowerCase(), button.dataset.label);
    button.addEventListener("click", () => enqueue({ type: "choose", label: button.dataset.label }));
  });
  skipBtn.addEventListener("click", () => enqueue({ type: "skip" }));
  undoBtn.addEventListener("click", () => enqueue({ type: "undo" }));
  if (confirmBtn) confirmBtn.addEventListener("click", () => enqueue({ type: "confirm" }));
  retryBtn.addEventListener("click", () => {
    const action = retryAction;
    if (!action) return;
    // Re-run what failed, as it was asked: the item it was for is still shown.
    if (action.type === "submit") enqueue(config.confirm ? { type: "confirm" } : { type: "choose", label: action.label });
    else enqueue({ type: action.type });
  });
  helpBtn.addEventListener("click", openHelp);
  helpClose.addEventListener("click", closeHelp);
  help.addEventListener("click", (event) => {
    if (event.target === help) closeHelp(); // a click on the backdrop
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable)) return;
    const key = event.key;
    if (helpOpen()) {
      // The list covers the item: no key labels what cannot be seen.
      if (key === "Escape" || key === "?") {
        event.preventDefault();
        closeHelp();
      } else if (key.length === 1) {
        event.preventDefault();
      }
      return;
    }
    const lower = key.toLowerCase();
    if (byKey.has(lower)) {
      event.preventDefault();
      enqueue({ type: "choose", label: byKey.get(lower) });
    } else if (key === "Enter") {
      // Without confirmation, Enter keeps its default (it presses a focused button).
      if (!config.confirm) return;
      // A focused button would also "click" on Enter; handle it once, here.
      event.preventDefault();
      enqueue({ type: "confirm" });
    } else if (lower === "s") {
      event.preventDefault();
      enqueue({ type: "skip" });
    } else if (lower === "u") {
      event.preventDefault();
      enqueue({ type: "undo" });
    } else if (key === "?") {
      event.preventDefault();
      openHelp();
    } else if (key === "Escape") {
      keyHint.hidden = true;
    } else if (key.length === 1 && key !== " ") {
      // A printable key that means nothing here (space keeps its default: it presses a focused button).
      flashHint([{ kbd: key }, " is not a shortcut here. Press ", { kbd: "?" }, " for the list."]);
    }
  });

  // Leaving while a label is being saved, or keys wait their turn, would lose
  // them without a word: the browser asks first.
  window.addEventListener("beforeunload", (event) => {
    if (!draining) return;
    event.preventDefault();
    event.returnValue = "";
  });

  enqueue({ type: "next" });
})();
