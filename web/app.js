// edge's web page: sign in, upload files as jobs and follow them live, browse what the
// server keeps. Plain JavaScript, no framework and no build step; it talks to this origin only
// (docs/PROTOCOL.md describes every request it makes).
'use strict';

(() => {
  const TOKEN_KEY = 'edge.token';
  /** Uploads that run at once; the others wait in the queue. */
  const MAX_PARALLEL = 3;
  /** Record errors listed per upload; the rest are counted. */
  const MAX_ERRORS_SHOWN = 20;
  /** Tries of one upload the server refuses as `rate_limited` (429) before giving up. */
  const MAX_ATTEMPTS = 5;
  /** How often a job's events are asked for until the job exists. */
  const FOLLOW_RETRY_MS = 250;
  /** Files larger than this get an icon instead of a preview. */
  const MAX_PREVIEW_BYTES = 16 * 1024 * 1024;

  const state = {
    token: null,
    claims: null,
    tasks: [],
    views: [],
    active: null,
    expiryTimer: 0,
    clockTimer: 0,
  };

  // ---------------------------------------------------------------- helpers

  const $ = (selector, root = document) => root.querySelector(selector);

  /** An element with attributes (`text`, `class`, `on<event>`, others as attributes). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'text') node.textContent = value;
      else if (name === 'class') node.className = value;
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function formatBytes(n) {
    if (typeof n !== 'number' || !Number.isFinite(n)) return '?';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
  }

  const formatCount = (n) => (typeof n === 'number' ? n.toLocaleString() : '–');

  function formatTime(value) {
    if (!value) return '–';
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
  }

  /** A value of an item as one line of text. */
  function formatValue(value) {
    if (value === null || value === undefined) return '–';
    if (Array.isArray(value)) return value.length ? value.map(formatValue).join(', ') : '–';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  /** An RFC 6901 JSON pointer into `value`. */
  function pointer(value, path) {
    if (!path) return value;
    let node = value;
    for (const raw of path.split('/').slice(1)) {
      const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
      if (node === null || typeof node !== 'object') return undefined;
      node = node[part];
    }
    return node;
  }

  /** 32 random hex characters: the `ref` that names an upload's job before its id is known. */
  function randomRef() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  let announceTimer = 0;
  /** Says `text` in the status line (a live region) for a few seconds. */
  function announce(text) {
    const status = $('#status');
    status.textContent = '';
    clearTimeout(announceTimer);
    // A change the live region notices even when the text repeats.
    announceTimer = setTimeout(() => {
      status.textContent = text;
      announceTimer = setTimeout(() => {
        status.textContent = '';
      }, 8000);
    }, 30);
  }

  /** Reads NDJSON from a response body, line by line, as it arrives. */
  async function readLines(body, onLine) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        if (line.trim()) onLine(line);
      }
    }
    buffer += decoder.decode();
    if (buffer.trim()) onLine(buffer);
  }

  function parseEvent(line) {
    try {
      const event = JSON.parse(line);
      return event && typeof event === 'object' && typeof event.event === 'string' ? event : null;
    } catch {
      return null;
    }
  }

  // ---------------------------------------------------------------- the API

  /** A refusal of the server: its status and `{"error":{"code","message"}}`. */
  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || `the server answered ${status}`);
      this.status = status;
      this.code = error.code || `http_${status}`;
      this.retryAfter = error.retry_after;
    }
  }

  /** The request was refused for its token: the page went back to sign-in. */
  class SignedOut extends Error {}

  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error === 'object') return body.error;
    } catch {
      // Not JSON: described by its status below.
    }
    return { code: `http_${response.status}`, message: `the server answered ${response.status} ${response.statusText}`.trim() };
  }

  /** A request with the token; a `401` signs out with the server's message. */
  async function api(path, options = {}) {
    if (!state.token) throw new SignedOut('not signed in');
    const headers = new Headers(options.headers || {});
    headers.set('Authorization', `Bearer ${state.token}`);
    const response = await fetch(path, { ...options, headers, cache: 'no-store' });
    if (response.status === 401) {
      const error = await errorOf(response);
      signOut(`Signed out: ${error.message}`);
      throw new SignedOut(error.message);
    }
    return response;
  }

  async function apiJson(path, options) {
    const response = await api(path, options);
    if (!response.ok) throw new ApiError(response.status, await errorOf(response));
    return response.json();
  }

  /** Shows what went wrong in a view's message area (nothing when the page signed out). */
  function showError(target, error) {
    if (error instanceof SignedOut || (error && error.name === 'AbortError')) return;
    let text;
    if (error instanceof ApiError && error.status === 403) {
      text = `Your token does not allow this: ${error.message}`;
    } else if (error instanceof ApiError) {
      text = `${error.message} (${error.code})`;
    } else {
      text = `The request failed: ${error && error.message ? error.message : error}`;
    }
    target.textContent = text;
    target.hidden = false;
  }

  function clearMessage(target) {
    target.textContent = '';
  }

  // ---------------------------------------------------------------- signing in and out

  /** The claims of a JWT, read without verifying it (the server verifies it). */
  function claimsOf(token) {
    const parts = token.split('.');
    if (parts.length !== 3) throw new Error('a token is three parts separated by dots');
    let base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    base64 += '='.repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== 'object') throw new Error('its claims are not a JSON object');
    return claims;
  }

  function signInMessage(text) {
    const message = $('#signin-message');
    message.textContent = text || '';
  }

  /** Takes `token` when the server accepts it; says why not otherwise. */
  async function useToken(token) {
    token = token.trim();
    let claims;
    try {
      claims = claimsOf(token);
    } catch (e) {
      signInMessage(`This is not a token: ${e.message}.`);
      return false;
    }
    if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) {
      signInMessage(`This token expired at ${formatTime(claims.exp * 1000)}.`);
      return false;
    }
    let response;
    try {
      response = await fetch('/v1/tasks', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
    } catch (e) {
      signInMessage(`The server cannot be reached: ${e.message}`);
      return false;
    }
    if (!response.ok) {
      const error = await errorOf(response);
      signInMessage(`The server refuses this token: ${error.message}`);
      return false;
    }
    const { tasks } = await response.json();
    state.token = token;
    state.claims = claims;
    state.tasks = Array.isArray(tasks) ? tasks : [];
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // Storage may be off: the session lasts as long as the page.
    }
    showApp();
    return true;
  }

  async function login(event) {
    event.preventDefault();
    const name = $('#login-name').value.trim();
    const password = $('#login-password').value;
    if (!name || !password) {
      signInMessage('Enter your name and password.');
      return;
    }
    const button = $('#login-submit');
    button.disabled = true;
    signInMessage('Signing in…');
    try {
      const response = await fetch('/v1/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name, password }),
        cache: 'no-store',
      });
      if (response.ok) {
        const body = await response.json();
        $('#login-password').value = '';
        if (await useToken(String(body.token || ''))) signInMessage('');
        return;
      }
      const error = await errorOf(response);
      if (response.status === 429) {
        const wait = error.retry_after ?? response.headers.get('Retry-After');
        const already = wait && String(error.message).includes(String(wait));
        signInMessage(`${error.message}${wait && !already ? ` Try again in ${wait} s.` : ''}`);
      } else if (response.status === 404 || response.status === 405) {
        signInMessage('This server has no password sign-in: paste a token instead.');
      } else {
        signInMessage(error.message);
      }
    } catch (e) {
      signInMessage(`The server cannot be reached: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function pasteToken(event) {
    event.preventDefault();
    const input = $('#token-input');
    if (!input.value.trim()) {
      signInMessage('Paste a token first.');
      return;
    }
    const button = $('#token-submit');
    button.disabled = true;
    try {
      if (await useToken(input.value)) {
        input.value = '';
        signInMessage('');
      }
    } finally {
      button.disabled = false;
    }
  }

  function signOut(message) {
    const wasSignedIn = state.token !== null;
    state.token = null;
    state.claims = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Nothing kept.
    }
    clearTimeout(state.expiryTimer);
    clearInterval(state.clockTimer);
    if (state.active && state.active.leave) state.active.leave();
    state.active = null;
    uploads.cancelAll();
    $('#session').hidden = true;
    $('#app').hidden = true;
    $('#signin').hidden = false;
    signInMessage(message || '');
    if (wasSignedIn) announce(message || 'Signed out.');
    $('#login-name').focus();
  }

  function showSession() {
    const { claims } = state;
    $('#who').textContent = claims.sub || '(no subject)';
    const expires = $('#expires');
    if (typeof claims.exp !== 'number') {
      expires.textContent = 'no expiry';
      return;
    }
    const at = claims.exp * 1000;
    const left = Math.max(0, at - Date.now());
    const minutes = Math.round(left / 60000);
    const inWords = minutes >= 120 ? `${Math.round(minutes / 60)} h` : `${minutes} min`;
    expires.replaceChildren(
      el('span', { class: 'wide', text: `until ${formatTime(at)}, ` }),
      el('time', { datetime: new Date(at).toISOString(), text: `${inWords} left` }),
    );
    expires.title = claims.scope ? `Scopes: ${claims.scope}` : 'No scopes';
  }

  function watchExpiry() {
    clearTimeout(state.expiryTimer);
    clearInterval(state.clockTimer);
    const exp = state.claims && state.claims.exp;
    if (typeof exp !== 'number') return;
    const check = () => {
      if (exp * 1000 <= Date.now()) {
        signOut(`Your session expired at ${formatTime(exp * 1000)}: sign in again.`);
      } else {
        state.expiryTimer = setTimeout(check, Math.min(exp * 1000 - Date.now() + 50, 2 ** 31 - 1));
      }
    };
    check();
    state.clockTimer = setInterval(showSession, 30000);
  }

  function showApp() {
    $('#signin').hidden = true;
    $('#session').hidden = false;
    $('#app').hidden = false;
    showSession();
    watchExpiry();
    buildViews();
    uploads.setTasks(state.tasks);
    const wanted = location.hash.slice(1);
    const view = state.views.find((v) => v.id === wanted) || state.views[0];
    select(view, false);
    announce(`Signed in as ${state.claims.sub}.`);
  }

  // ---------------------------------------------------------------- tabs

  /** The views, from what the server has: a tab per task with read endpoints. */
  function buildViews() {
    for (const view of state.views) {
      if (view.generated) view.panel.remove();
    }
    const views = [{ id: 'upload', label: 'Upload', panel: $('#panel-upload') }];
    for (const task of state.tasks) {
      if (!task.reads) continue;
      views.push(task.reads.content ? filesView(task) : itemsView(task));
    }
    views.push(jobsView(), healthView());
    const tabs = $('#tabs');
    tabs.replaceChildren();
    for (const view of views) {
      view.tab = el('button', {
        type: 'button',
        role: 'tab',
        id: `tab-${view.id}`,
        'aria-controls': `panel-${view.id}`,
        'aria-selected': 'false',
        tabindex: '-1',
        text: view.label,
        onclick: () => select(view, true),
        onkeydown: (event) => tabKey(event, view),
      });
      tabs.append(view.tab);
      view.panel.hidden = true;
    }
    state.views = views;
  }

  function tabKey(event, view) {
    const views = state.views;
    const at = views.indexOf(view);
    let next = null;
    if (event.key === 'ArrowRight') next = views[(at + 1) % views.length];
    else if (event.key === 'ArrowLeft') next = views[(at - 1 + views.length) % views.length];
    else if (event.key === 'Home') next = views[0];
    else if (event.key === 'End') next = views[views.length - 1];
    if (next) {
      event.preventDefault();
      select(next, true);
    }
  }

  function select(view, focus) {
    if (state.active && state.active !== view && state.active.leave) state.active.leave();
    for (const other of state.views) {
      const on = other === view;
      other.tab.setAttribute('aria-selected', String(on));
      other.tab.tabIndex = on ? 0 : -1;
      other.panel.hidden = !on;
    }
    state.active = view;
    if (focus) view.tab.focus();
    history.replaceState(null, '', `#${view.id}`);
    if (view.show) view.show();
  }

  function generatedPanel(id, title) {
    const panel = el('section', {
      id: `panel-${id}`,
      class: 'panel',
      role: 'tabpanel',
      'aria-labelledby': `tab-${id}`,
      tabindex: '0',
      hidden: true,
    });
    panel.append(el('h2', { text: title }), el('p', { class: 'message', role: 'alert' }));
    $('#panel-health').before(panel);
    return panel;
  }

  const titleOf = (name) => name.charAt(0).toUpperCase() + name.slice(1);

  /** Whether the token's scopes (as its claims say) hold `scope`; the server decides. */
  function holds(scope) {
    const scopes = String((state.claims && state.claims.scope) || '').split(' ');
    return scopes.includes(scope) || scopes.includes('admin');
  }

  // ---------------------------------------------------------------- uploads

  /** One file's upload, its row, and its job's events. */
  class Upload {
    constructor(file, task, format, params) {
      this.file = file;
      this.task = task;
      this.format = format;
      this.params = params;
      this.ref = randomRef();
      this.stage = 'queued';
      this.sent = 0;
      this.records = null;
      this.committed = 0;
      this.errors = 0;
      this.errorIndexes = new Set();
      this.results = 0;
      this.lastResult = null;
      this.job = null;
      this.final = null;
      this.note = '';
      this.xhr = null;
      this.follower = null;
      this.reading = false;
      this.attempts = 0;
      this.row = this.buildRow();
      this.render();
    }

    buildRow() {
      const id = `upload-${this.ref}`;
      this.nodes = {
        state: el('span', { class: 'state' }),
        progress: el('progress', { id: `${id}-progress`, max: String(this.file.size || 1), value: '0' }),
        sent: el('span', { class: 'sent' }),
        counts: el('p', { class: 'counts' }),
        errors: el('ol', { class: 'errors', 'aria-label': `Record errors of ${this.file.name}` }),
        moreErrors: el('p', { class: 'more-errors', hidden: true }),
        summary: el('p', { class: 'summary' }),
        details: el('p', { class: 'details muted' }),
        cancel: el('button', { type: 'button', class: 'secondary small', text: 'Cancel', onclick: () => this.cancel() }),
      };
      const n = this.nodes;
      return el(
        'li',
        { class: 'upload', id, 'data-ref': this.ref, 'data-name': this.file.name, 'data-task': this.task },
        el(
          'div',
          { class: 'upload-head' },
          el('strong', { class: 'name', text: this.file.name }),
          el('span', { class: 'muted', text: `${formatBytes(this.file.size)} · ${this.task}` }),
          n.state,
          n.cancel,
        ),
        el('div', { class: 'bar' }, el('label', { for: `${id}-progress`, class: 'visually-hidden', text: `Bytes of ${this.file.name} sent` }), n.progress, n.sent),
        n.counts,
        n.errors,
        n.moreErrors,
        n.summary,
        n.details,
      );
    }

    /** Runs the upload to its end; follows its job meanwhile. */
    start() {
      if (this.stage !== 'queued' || this.final) return Promise.resolve();
      this.attempts += 1;
      this.note = '';
      this.stage = 'uploading';
      this.render();
      const query = new URLSearchParams();
      query.set('name', this.file.name);
      query.set('ref', this.ref);
      if (this.format) query.set('format', this.format);
      for (const [key, value] of this.params) query.append(key, value);
      const done = new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        this.xhr = xhr;
        let seen = 0;
        const readResponse = () => {
          if (xhr.status !== 200) return;
          const text = xhr.responseText;
          let end;
          while ((end = text.indexOf('\n', seen)) >= 0) {
            const line = text.slice(seen, end);
            seen = end + 1;
            const event = parseEvent(line);
            if (event) this.onEvent(event);
          }
        };
        xhr.open('PUT', `/v1/jobs/${encodeURIComponent(this.task)}?${query}`);
        xhr.setRequestHeader('Authorization', `Bearer ${state.token}`);
        if (this.file.type) xhr.setRequestHeader('Content-Type', this.file.type);
        xhr.upload.onprogress = (event) => {
          this.sent = event.loaded;
          this.render();
        };
        xhr.upload.onload = () => {
          this.sent = this.file.size;
          if (!this.final) this.stage = 'processing';
          this.render();
        };
        xhr.onprogress = readResponse;
        xhr.onload = async () => {
          readResponse();
          const tail = xhr.responseText.slice(seen);
          const last = parseEvent(tail);
          if (last) this.onEvent(last);
          if (xhr.status !== 200) {
            await this.refused(xhr);
          } else if (!this.final) {
            // The job's own answer ended without a final event: the watcher may still have it.
            await this.waitForFollower(2000);
            if (!this.final) this.finish({ event: 'failed', code: 'incomplete', message: 'the answer ended before the job did' });
          }
          resolve();
        };
        xhr.onerror = () => {
          if (!this.final) this.finish({ event: 'failed', code: 'network', message: 'the connection broke off during the upload' });
          resolve();
        };
        xhr.onabort = () => {
          if (!this.final) this.finish({ event: 'failed', code: 'cancelled', message: 'you cancelled the upload' });
          resolve();
        };
        xhr.send(this.file);
      });
      this.follower = this.follow();
      return done.finally(() => this.stopFollowing());
    }

    /** Reads the job's events while the body uploads: the response is not seen until then. */
    async follow() {
      const controller = new AbortController();
      this.followController = controller;
      const url = `/v1/jobs/ref:${encodeURIComponent(this.ref)}/events`;
      while (!this.final && !controller.signal.aborted) {
        let response;
        try {
          response = await api(url, { signal: controller.signal, headers: { Accept: 'application/x-ndjson' } });
        } catch {
          return;
        }
        if (response.status === 404) {
          // The job does not exist yet (or the server keeps no refs): the response has it.
          if (this.stage !== 'uploading' && this.stage !== 'processing') return;
          await sleep(FOLLOW_RETRY_MS);
          continue;
        }
        if (!response.ok) return; // e.g. no `jobs:read`: the response alone reports the job.
        // From here the watch ends by itself, after the job's final event.
        this.reading = true;
        try {
          await readLines(response.body, (line) => {
            const event = parseEvent(line);
            if (event) this.onEvent(event);
          });
        } catch {
          // Aborted, or the watch broke off: the upload's own answer goes on.
        }
        return;
      }
    }

    /** Stops asking for the job's events; a watch already reading them ends by itself. */
    stopFollowing() {
      if (this.followController && !this.reading) this.followController.abort();
    }

    async waitForFollower(ms) {
      if (!this.follower) return;
      await Promise.race([this.follower, sleep(ms)]);
    }

    async refused(xhr) {
      let error = { code: `http_${xhr.status}`, message: `the server answered ${xhr.status}` };
      try {
        const body = JSON.parse(xhr.responseText);
        if (body && body.error) error = body.error;
      } catch {
        // Not JSON.
      }
      if (xhr.status === 401) {
        this.finish({ event: 'rejected', code: error.code, message: error.message });
        signOut(`Signed out: ${error.message}`);
        return;
      }
      if (xhr.status === 429 && this.attempts < MAX_ATTEMPTS) {
        // The subject runs too many jobs or starts them too fast: wait as told, then again.
        const wait = Math.max(1, Number(error.retry_after ?? xhr.getResponseHeader('Retry-After')) || 1);
        this.retryIn(wait);
        return;
      }
      this.finish({ event: 'rejected', code: error.code, message: error.message });
    }

    /** Back to the queue in `seconds`, as a new attempt under a new `ref`. */
    retryIn(seconds) {
      this.stage = 'queued';
      this.ref = randomRef();
      this.sent = 0;
      this.xhr = null;
      this.reading = false;
      this.note = `the server is busy: trying again in ${seconds} s (attempt ${this.attempts + 1} of ${MAX_ATTEMPTS})`;
      this.render();
      setTimeout(() => uploads.requeue(this), seconds * 1000);
    }

    cancel() {
      if (this.stage === 'queued') {
        uploads.dequeue(this);
        this.finish({ event: 'failed', code: 'cancelled', message: 'you cancelled it before it started' });
      } else if (this.xhr && !this.final) {
        this.xhr.abort();
      }
    }

    onEvent(event) {
      switch (event.event) {
        case 'accepted':
          this.job = event.job || this.job;
          this.note = `job ${event.job}${event.format ? `, format ${event.format}` : ''}`;
          break;
        case 'progress':
          this.records = Math.max(this.records || 0, event.records || 0);
          this.errors = Math.max(this.errors, event.errors || 0);
          break;
        case 'committed':
          this.committed = Math.max(this.committed, event.records || 0);
          break;
        case 'record_error':
          this.addError(event);
          break;
        case 'result':
          this.results += 1;
          this.lastResult = event;
          break;
        case 'task':
          if (event.data && typeof event.data === 'object') {
            this.note = Object.entries(event.data)
              .map(([k, v]) => `${k.replace(/_/g, ' ')} ${formatValue(v)}`)
              .join(', ');
          }
          break;
        case 'draining':
          this.note = `the server is shutting down; the job has ${event.grace_secs} s to finish`;
          break;
        case 'done':
        case 'failed':
        case 'rejected':
          this.finish(event);
          return;
        default:
          return; // Events this page does not know are ignored.
      }
      this.render();
    }

    addError(error) {
      if (this.errorIndexes.has(error.index)) return;
      this.errorIndexes.add(error.index);
      this.errors = Math.max(this.errors, this.errorIndexes.size);
      if (this.nodes.errors.childElementCount >= MAX_ERRORS_SHOWN) return;
      const where = `record ${error.index} at byte ${error.offset}${error.key ? ` (${error.key})` : ''}`;
      this.nodes.errors.append(el('li', {}, el('span', { class: 'where', text: where }), `: ${error.code}: ${error.message}`));
    }

    finish(event) {
      if (this.final) return;
      this.final = event;
      if (event.event === 'done') {
        this.stage = 'done';
      } else if (event.event === 'rejected' || (event.code && event.code.startsWith('http_'))) {
        this.stage = 'refused';
      } else {
        this.stage = 'failed';
      }
      if (typeof event.committed === 'number') this.committed = event.committed;
      if (typeof event.records === 'number') this.records = event.records;
      if (typeof event.errors === 'number') this.errors = event.errors;
      for (const error of event.first_errors || []) this.addError(error);
      if (this.stage === 'done') this.sent = this.file.size;
      this.stopFollowing();
      this.render();
      uploads.finished();
      const how = this.stage === 'done' ? `done, ${formatCount(this.committed)} committed` : `${this.stage}: ${event.code}`;
      announce(`${this.file.name}: ${how}.`);
    }

    render() {
      const n = this.nodes;
      this.row.dataset.state = this.stage;
      this.row.dataset.committed = String(this.committed);
      this.row.dataset.errors = String(this.errors);
      this.row.dataset.attempts = String(this.attempts);
      const percent = this.file.size ? Math.floor((100 * this.sent) / this.file.size) : 100;
      const label = {
        queued: 'Waiting',
        uploading: `Uploading ${percent}%`,
        processing: 'Finishing',
        done: 'Done',
        failed: 'Failed',
        refused: 'Refused',
      }[this.stage];
      n.state.textContent = label;
      n.state.className = `state badge ${this.stage}`;
      n.progress.value = Math.min(this.sent, this.file.size || 1);
      if (this.stage === 'done' && !this.file.size) n.progress.value = 1;
      n.sent.textContent = `${formatBytes(this.sent)} of ${formatBytes(this.file.size)} sent`;
      n.cancel.hidden = this.final !== null;
      const counts = [];
      if (this.records !== null) counts.push(plural(this.records, 'record'));
      counts.push(el('span', { class: 'committed', text: `${formatCount(this.committed)} committed` }));
      counts.push(el('span', { class: this.errors ? 'error-count has-errors' : 'error-count', text: plural(this.errors, 'error') }));
      if (this.results) {
        const last = this.lastResult;
        const answer = last ? Object.entries(last).filter(([k]) => k !== 'event').map(([k, v]) => `${k} ${formatValue(v)}`).join(', ') : '';
        counts.push(`${formatCount(this.results)} answers (last: ${answer})`);
      }
      if (this.note) counts.push(el('span', { class: 'muted', text: this.note }));
      n.counts.replaceChildren(...counts.flatMap((part, i) => (i ? [' · ', part] : [part])));
      const hidden = this.errors - n.errors.childElementCount;
      n.moreErrors.hidden = hidden <= 0;
      n.moreErrors.textContent = hidden > 0 ? `and ${formatCount(hidden)} more` : '';
      const [headline, details] = this.summaryParts();
      n.summary.textContent = headline;
      n.details.textContent = details;
    }

    /** The final event in words: a headline, and the task's summary as details. */
    summaryParts() {
      const event = this.final;
      if (!event) return ['', ''];
      if (event.event === 'done') {
        let headline = `Done: ${plural(event.records, 'record')}, ${formatCount(event.committed)} committed, ${plural(event.errors, 'error')}`;
        if (typeof event.duration_ms === 'number') headline += ` in ${event.duration_ms} ms`;
        let details = '';
        if (event.summary && typeof event.summary === 'object') {
          details = Object.entries(event.summary)
            .filter(([k]) => !['job', 'sub', 'name'].includes(k))
            .map(([k, v]) => `${k.replace(/_/g, ' ')} ${shorten(formatValue(v))}`)
            .join(' · ');
        }
        return [headline, details];
      }
      const committed = typeof event.committed === 'number' ? `; ${formatCount(event.committed)} committed` : '';
      const offset = typeof event.offset === 'number' ? ` at byte ${event.offset}` : '';
      const word = event.event === 'rejected' ? 'Refused' : 'Failed';
      return [`${word}: ${event.code}: ${event.message}${offset}${committed}`, ''];
    }
  }

  function plural(n, word) {
    return `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
  }

  /** A long run of hex digits (a digest) cut to its start. */
  function shorten(text) {
    return /^[0-9a-f]{24,}$/.test(text) ? `${text.slice(0, 12)}…` : text;
  }

  const uploads = (() => {
    const waiting = [];
    const all = new Set();
    let running = 0;
    let tasks = [];

    const taskSelect = () => $('#task');
    const formatSelect = () => $('#format');

    function setTasks(list) {
      tasks = list;
      const select = taskSelect();
      const previous = select.value;
      select.replaceChildren(
        ...list.map((task) => {
          const allowed = holds(`${task.name}:write`);
          const text = allowed ? task.name : `${task.name} (your token lacks ${task.name}:write)`;
          return el('option', { value: task.name, text });
        }),
      );
      if (list.some((task) => task.name === previous)) select.value = previous;
      taskChanged();
    }

    function currentTask() {
      return tasks.find((task) => task.name === taskSelect().value);
    }

    function taskChanged() {
      const task = currentTask();
      const formats = task ? task.formats || [] : [];
      const select = formatSelect();
      const raw = formats.length === 1 && formats[0] === 'raw';
      if (raw) {
        select.replaceChildren(el('option', { value: '', text: 'as is (the file\u2019s bytes)' }));
      } else {
        select.replaceChildren(
          el('option', { value: '', text: 'auto (from the file type or its first bytes)' }),
          ...formats.map((format) => el('option', { value: format, text: format })),
        );
      }
      select.disabled = raw;
      $('#task-help').textContent = task ? task.description || '' : 'No task is available.';
    }

    let paramCount = 0;
    function addParam(key = '', value = '') {
      paramCount += 1;
      const id = `param-${paramCount}`;
      const row = el(
        'div',
        { class: 'param' },
        el('label', { for: `${id}-key`, class: 'visually-hidden', text: `Parameter ${paramCount} name` }),
        el('input', { id: `${id}-key`, class: 'param-key', placeholder: 'name', value: key, autocomplete: 'off', spellcheck: 'false' }),
        el('span', { 'aria-hidden': 'true', text: '=' }),
        el('label', { for: `${id}-value`, class: 'visually-hidden', text: `Parameter ${paramCount} value` }),
        el('input', { id: `${id}-value`, class: 'param-value', placeholder: 'value', value, autocomplete: 'off', spellcheck: 'false' }),
      );
      row.append(
        el('button', {
          type: 'button',
          class: 'secondary small',
          'aria-label': `Remove parameter ${paramCount}`,
          text: 'Remove',
          onclick: () => {
            row.remove();
            $('#add-param').focus();
          },
        }),
      );
      $('#params').append(row);
      return row;
    }

    function params() {
      const pairs = [];
      for (const row of document.querySelectorAll('#params .param')) {
        const key = $('.param-key', row).value.trim();
        if (key) pairs.push([key, $('.param-value', row).value]);
      }
      return pairs;
    }

    function add(files) {
      const task = currentTask();
      if (!task) {
        announce('No task to upload to.');
        return;
      }
      const list = $('#uploads');
      const pairs = params();
      if (pairs.some(([key]) => key === 'format' || key === 'name' || key === 'ref')) {
        announce('The parameters `format`, `name` and `ref` are set by the page: remove them.');
        return;
      }
      for (const file of files) {
        const upload = new Upload(file, task.name, formatSelect().disabled ? '' : formatSelect().value, pairs);
        all.add(upload);
        list.prepend(upload.row);
        waiting.push(upload);
      }
      announce(`${files.length} file${files.length === 1 ? '' : 's'} added to the uploads.`);
      pump();
    }

    function pump() {
      while (running < MAX_PARALLEL && waiting.length) {
        const upload = waiting.shift();
        running += 1;
        upload.start().finally(() => {
          running -= 1;
          pump();
        });
      }
    }

    /** Puts an upload back at the end of the queue (to try again). */
    function requeue(upload) {
      if (upload.final || waiting.includes(upload)) return;
      waiting.push(upload);
      pump();
    }

    function dequeue(upload) {
      const at = waiting.indexOf(upload);
      if (at >= 0) waiting.splice(at, 1);
    }

    function cancelAll() {
      for (const upload of all) {
        if (!upload.final) upload.cancel();
      }
    }

    function setUp() {
      taskSelect().addEventListener('change', taskChanged);
      $('#add-param').addEventListener('click', () => $('.param-key', addParam()).focus());
      const input = $('#files');
      input.addEventListener('change', () => {
        const files = Array.from(input.files || []);
        if (files.length) add(files);
        input.value = '';
      });
      const drop = $('#drop');
      for (const type of ['dragenter', 'dragover']) {
        drop.addEventListener(type, (event) => {
          event.preventDefault();
          drop.classList.add('over');
        });
      }
      for (const type of ['dragleave', 'drop']) {
        drop.addEventListener(type, () => drop.classList.remove('over'));
      }
      drop.addEventListener('drop', (event) => {
        event.preventDefault();
        const files = Array.from((event.dataTransfer && event.dataTransfer.files) || []);
        if (files.length) add(files);
      });
      $('#upload-form').addEventListener('submit', (event) => event.preventDefault());
      $('#clear-finished').addEventListener('click', clearFinished);
    }

    function clearFinished() {
      for (const upload of all) {
        if (upload.final) {
          upload.row.remove();
          all.delete(upload);
        }
      }
      $('#clear-finished').hidden = true;
    }

    function finished() {
      $('#clear-finished').hidden = false;
    }

    return { setTasks, setUp, dequeue, requeue, cancelAll, finished };
  })();

  // ---------------------------------------------------------------- items (e.g. ports)

  /** A task's items: find one by key, list pages with its filters, an item and its history. */
  function itemsView(task) {
    const reads = task.reads;
    const id = task.name;
    const panel = generatedPanel(id, titleOf(id));
    const message = $('.message', panel);
    const item = reads.item || 'item';
    const columns = Array.isArray(reads.columns) && reads.columns.length ? reads.columns : [{ header: 'KEY', pointer: '/key' }];
    const keyInput = el('input', { id: `${id}-key`, name: 'key', autocomplete: 'off', spellcheck: 'false' });
    const find = el(
      'form',
      { class: 'card inline find', role: 'search', 'aria-label': `Find a ${item}` },
      el('label', { for: `${id}-key`, text: `Find a ${item} by key` }),
      keyInput,
      el('button', { type: 'submit', text: 'Find' }),
    );
    const filterInputs = (reads.filters || []).map((filter) => {
      const input = el('input', {
        id: `${id}-f-${filter.name}`,
        name: filter.name,
        autocomplete: 'off',
        title: filter.help,
      });
      return { filter, input };
    });
    const limit = el(
      'select',
      { id: `${id}-limit`, name: 'limit' },
      [25, 50, 100].filter((n) => n <= (reads.max_page || 100)).map((n) => el('option', { value: String(n), text: String(n) })),
    );
    const list = el(
      'form',
      { class: 'card inline filter', 'aria-label': `List ${id}` },
      filterInputs.map(({ filter, input }) => el('span', { class: 'field' }, el('label', { for: input.id, text: titleOf(filter.name) }), input)),
      el('span', { class: 'field' }, el('label', { for: limit.id, text: 'Per page' }), limit),
      el('button', { type: 'submit', text: 'List' }),
    );
    const tbody = el('tbody');
    const table = el(
      'div',
      { class: 'table-wrap' },
      el(
        'table',
        { class: 'items stack' },
        el('caption', { class: 'visually-hidden', text: `${titleOf(id)}, in key order` }),
        el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col', text: titleOf(c.header.toLowerCase()) })))),
        tbody,
      ),
    );
    const more = el('button', { type: 'button', class: 'secondary more', text: 'More', hidden: true });
    const detail = el('section', { class: 'detail', 'aria-live': 'polite', hidden: true });
    panel.append(find, list, detail, table, more);
    let next = null;

    async function page(reset) {
      clearMessage(message);
      const query = new URLSearchParams();
      for (const { filter, input } of filterInputs) {
        if (input.value.trim()) query.set(filter.name, input.value.trim());
      }
      query.set('limit', limit.value);
      if (!reset && next !== null) query.set('after', String(next));
      try {
        const body = await apiJson(`/v1/${encodeURIComponent(id)}?${query}`);
        if (reset) tbody.replaceChildren();
        for (const entry of body.items || []) tbody.append(row(entry));
        if (reset && !(body.items || []).length) {
          tbody.append(el('tr', {}, el('td', { colspan: String(columns.length), class: 'muted', text: `No ${id} here.` })));
        }
        next = body.next ?? null;
        more.hidden = next === null;
      } catch (e) {
        showError(message, e);
      }
    }

    function row(entry) {
      const key = formatValue(pointer(entry, columns[0].pointer));
      return el(
        'tr',
        {},
        columns.map((column, i) => {
          const text = formatValue(pointer(entry, column.pointer));
          const label = titleOf(column.header.toLowerCase());
          if (i === 0) {
            return el('td', { 'data-label': label }, el('button', { type: 'button', class: 'link', text, 'aria-label': `Show ${item} ${text}`, onclick: () => open(key) }));
          }
          return el('td', { 'data-label': label, text });
        }),
      );
    }

    async function open(key) {
      clearMessage(message);
      detail.hidden = false;
      detail.replaceChildren(el('p', { class: 'muted', text: `Loading ${item} ${key}…` }));
      try {
        const value = await apiJson(`/v1/${encodeURIComponent(id)}/${encodeURIComponent(key)}`);
        const facts = el('dl', { class: 'facts' });
        const fields = value && typeof value === 'object' && !Array.isArray(value) ? Object.entries(value) : [['value', value]];
        for (const [name, field] of fields) {
          facts.append(el('dt', { text: name.replace(/_/g, ' ') }), el('dd', { text: formatValue(field) }));
        }
        const title = typeof value.name === 'string' ? `${key}: ${value.name}` : key;
        detail.replaceChildren(el('h3', { class: 'detail-title', tabindex: '-1', text: title }), facts);
        $('.detail-title', detail).focus();
        if (reads.history) await history(key);
      } catch (e) {
        detail.replaceChildren();
        detail.hidden = true;
        showError(message, e);
      }
    }

    async function history(key) {
      const section = el('section', { class: 'history' }, el('h4', { text: 'Change history' }));
      detail.append(section);
      try {
        const response = await api(`/v1/${encodeURIComponent(id)}/${encodeURIComponent(key)}/history?limit=50`);
        if (response.status === 404) {
          section.append(el('p', { class: 'muted', text: 'No job has replaced it yet.' }));
          return;
        }
        if (!response.ok) throw new ApiError(response.status, await errorOf(response));
        const body = await response.json();
        const items = body.items || [];
        if (!items.length) {
          section.append(el('p', { class: 'muted', text: 'No job has replaced it yet.' }));
          return;
        }
        section.append(
          el(
            'div',
            { class: 'table-wrap' },
            el(
              'table',
              {},
              el('thead', {}, el('tr', {}, ['Replaced by job', 'By', 'At', 'Was'].map((h) => el('th', { scope: 'col', text: h })))),
              el('tbody', {}, items.map((entry) => el('tr', {}, el('td', { class: 'mono', text: entry.job }), el('td', { text: entry.sub }), el('td', { text: formatTime(entry.time) }), el('td', { text: entry.was })))),
            ),
          ),
        );
      } catch (e) {
        section.append(el('p', { class: 'message', text: e instanceof ApiError ? e.message : String(e) }));
      }
    }

    find.addEventListener('submit', (event) => {
      event.preventDefault();
      const key = keyInput.value.trim();
      if (key) open(key);
    });
    list.addEventListener('submit', (event) => {
      event.preventDefault();
      page(true);
    });
    more.addEventListener('click', () => page(false));

    return {
      id,
      label: titleOf(id),
      panel,
      generated: true,
      show: () => page(true),
    };
  }

  // ---------------------------------------------------------------- files (e.g. blobs)

  /** A task whose items are files: a gallery with previews, download and delete. */
  function filesView(task) {
    const reads = task.reads;
    const id = task.name;
    const panel = generatedPanel(id, id === 'blobs' ? 'Files' : titleOf(id));
    const message = $('.message', panel);
    const prefix = el('input', { id: `${id}-prefix`, name: 'prefix', autocomplete: 'off', spellcheck: 'false' });
    const filters = (reads.filters || []).some((f) => f.name === 'prefix');
    const form = el(
      'form',
      { class: 'card inline filter', role: 'search', 'aria-label': 'Filter files' },
      filters ? [el('label', { for: prefix.id, text: 'Names starting with' }), prefix] : [],
      el('button', { type: 'submit', text: filters ? 'List' : 'Refresh' }),
    );
    const gallery = el('ul', { class: 'gallery', 'aria-label': 'Files' });
    const more = el('button', { type: 'button', class: 'secondary more', text: 'More files', hidden: true });
    panel.append(form, gallery, more);
    const urls = new Set();
    let next = null;

    function release() {
      for (const url of urls) URL.revokeObjectURL(url);
      urls.clear();
    }

    async function page(reset) {
      clearMessage(message);
      const query = new URLSearchParams({ limit: '60' });
      if (filters && prefix.value) query.set('prefix', prefix.value);
      if (!reset && next !== null) query.set('after', String(next));
      try {
        const body = await apiJson(`/v1/${encodeURIComponent(id)}?${query}`);
        if (reset) {
          release();
          gallery.replaceChildren();
        }
        const items = body.items || [];
        for (const file of items) gallery.append(card(file));
        if (reset && !items.length) gallery.append(el('li', { class: 'muted empty', text: 'No files here.' }));
        next = body.next ?? null;
        more.hidden = next === null;
      } catch (e) {
        showError(message, e);
      }
    }

    const fileUrl = (name) => `/v1/${encodeURIComponent(id)}/${encodeURIComponent(name)}`;

    async function objectUrl(name) {
      const response = await api(fileUrl(name));
      if (!response.ok) throw new ApiError(response.status, await errorOf(response));
      const url = URL.createObjectURL(await response.blob());
      urls.add(url);
      return url;
    }

    function card(file) {
      const name = String(file.name);
      const type = String(file.content_type || '');
      const image = type.startsWith('image/') && file.size <= MAX_PREVIEW_BYTES;
      const picture = el('img', { class: image ? 'preview' : 'icon', alt: image ? `Preview of ${name}` : '', src: image ? null : '/file.svg', width: '48', height: '48' });
      const figure = el(
        'figure',
        {},
        el('div', { class: 'thumb' }, picture),
        el(
          'figcaption',
          {},
          el('span', { class: 'file-name', text: name }),
          el('span', { class: 'muted', text: `${formatBytes(file.size)} · ${type || 'unknown type'}` }),
          el('span', { class: 'muted', text: `${formatTime(file.created)}${file.sub ? ` · ${file.sub}` : ''}` }),
        ),
      );
      const actions = el(
        'div',
        { class: 'actions' },
        el('button', { type: 'button', class: 'secondary small', text: 'Download', 'aria-label': `Download ${name}`, onclick: () => download(name) }),
      );
      const item = el('li', { class: 'file', 'data-name': name }, figure, actions);
      if (reads.delete) {
        actions.append(el('button', { type: 'button', class: 'danger small', text: 'Delete', 'aria-label': `Delete ${name}`, onclick: () => remove(name, item) }));
      }
      if (image) {
        picture.dataset.loading = 'true';
        objectUrl(name)
          .then((url) => {
            picture.src = url;
          })
          .catch((e) => {
            picture.className = 'icon';
            picture.src = '/file.svg';
            picture.alt = '';
            showError(message, e);
          })
          .finally(() => delete picture.dataset.loading);
      }
      return item;
    }

    async function download(name) {
      clearMessage(message);
      try {
        const url = await objectUrl(name);
        const link = el('a', { href: url, download: name.split('/').pop() || name, hidden: true });
        document.body.append(link);
        link.click();
        link.remove();
        announce(`Downloading ${name}.`);
        setTimeout(() => {
          URL.revokeObjectURL(url);
          urls.delete(url);
        }, 60000);
      } catch (e) {
        showError(message, e);
      }
    }

    async function remove(name, item) {
      if (!window.confirm(`Delete ${name}? This cannot be undone.`)) return;
      clearMessage(message);
      try {
        await apiJson(fileUrl(name), { method: 'DELETE' });
        const picture = $('img', item);
        if (picture && picture.src.startsWith('blob:')) {
          URL.revokeObjectURL(picture.src);
          urls.delete(picture.src);
        }
        item.remove();
        announce(`Deleted ${name}.`);
      } catch (e) {
        showError(message, e);
      }
    }

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      page(true);
    });
    more.addEventListener('click', () => page(false));

    return {
      id,
      label: id === 'blobs' ? 'Files' : titleOf(id),
      panel,
      generated: true,
      show: () => page(true),
      leave() {
        release();
        gallery.replaceChildren();
      },
    };
  }

  // ---------------------------------------------------------------- jobs

  function jobsView() {
    const panel = $('#panel-jobs');
    const message = $('.message', panel);
    const tbody = $('tbody', panel);
    const more = $('.more', panel);
    const detail = $('.detail', panel);
    let next = null;
    let watching = null;

    async function page(reset) {
      clearMessage(message);
      const query = new URLSearchParams({ limit: '50' });
      if (!reset && next !== null) query.set('before', next);
      try {
        const body = await apiJson(`/v1/jobs?${query}`);
        if (reset) tbody.replaceChildren();
        const items = body.items || [];
        for (const job of items) tbody.append(row(job));
        if (reset && !items.length) tbody.append(el('tr', {}, el('td', { colspan: '7', class: 'muted', text: 'No jobs yet.' })));
        next = body.next ?? null;
        more.hidden = next === null;
      } catch (e) {
        showError(message, e);
      }
    }

    function row(job) {
      const name = job.name || job.job;
      return el(
        'tr',
        { 'data-job': job.job },
        el('td', { 'data-label': 'Outcome' }, el('span', { class: `badge ${job.outcome}`, text: job.outcome })),
        el('td', { 'data-label': 'Task', text: job.task }),
        el('td', { 'data-label': 'Name' }, el('button', { type: 'button', class: 'link', text: name, 'aria-label': `Show job ${job.job} (${name})`, onclick: () => open(job.job) })),
        el('td', { 'data-label': 'Records', class: 'num', text: formatCount(job.records) }),
        el('td', { 'data-label': 'Committed', class: 'num', text: formatCount(job.committed) }),
        el('td', { 'data-label': 'Errors', class: 'num', text: formatCount(job.errors) }),
        el('td', { 'data-label': 'Started', text: formatTime(job.started) }),
      );
    }

    function stopWatching() {
      if (watching) watching.abort();
      watching = null;
    }

    async function open(job) {
      stopWatching();
      clearMessage(message);
      detail.hidden = false;
      detail.replaceChildren(el('p', { class: 'muted', text: `Loading job ${job}…` }));
      try {
        const record = await apiJson(`/v1/jobs/${encodeURIComponent(job)}`);
        const facts = el('dl', { class: 'facts' });
        for (const [name, value] of Object.entries(record)) {
          const text = name === 'started' || name === 'finished' ? formatTime(value) : formatValue(value);
          facts.append(el('dt', { text: name }), el('dd', { text }));
        }
        const events = el('ol', { class: 'events', 'aria-label': `Events of job ${job}` });
        detail.replaceChildren(el('h3', { class: 'detail-title', tabindex: '-1', text: `Job ${job}` }), facts, el('h4', { text: 'Events' }), events);
        $('.detail-title', detail).focus();
        const controller = new AbortController();
        watching = controller;
        const response = await api(`/v1/jobs/${encodeURIComponent(job)}/events`, { signal: controller.signal, headers: { Accept: 'application/x-ndjson' } });
        if (!response.ok) throw new ApiError(response.status, await errorOf(response));
        await readLines(response.body, (line) => events.append(el('li', { class: 'mono', text: line })));
      } catch (e) {
        showError(message, e);
      }
    }

    $('.refresh', panel).addEventListener('click', () => page(true));
    more.addEventListener('click', () => page(false));

    return {
      id: 'jobs',
      label: 'Jobs',
      panel,
      show() {
        detail.hidden = true;
        detail.replaceChildren();
        page(true);
      },
      leave: stopWatching,
    };
  }

  // ---------------------------------------------------------------- health

  function healthView() {
    const panel = $('#panel-health');
    const message = $('.message', panel);
    const facts = $('.facts', panel);

    async function check() {
      clearMessage(message);
      try {
        const response = await fetch('/healthz', { cache: 'no-store' });
        const body = await response.json();
        const certificate = body.certificate || {};
        const rows = [
          ['Status', body.status],
          ['Certificate expires', formatTime(certificate.expires)],
          ['Days left', certificate.days_left],
        ];
        if (certificate.warning) rows.push(['Warning', certificate.warning]);
        if (state.claims) {
          rows.push(['Signed in as', state.claims.sub]);
          rows.push(['Your scopes', state.claims.scope || '(none: only the task list)']);
          if (typeof state.claims.exp === 'number') rows.push(['Your token expires', formatTime(state.claims.exp * 1000)]);
        }
        facts.replaceChildren(...rows.flatMap(([name, value]) => [el('dt', { text: name }), el('dd', { text: formatValue(value), class: name === 'Status' ? `badge ${body.status}` : null })]));
      } catch (e) {
        showError(message, e);
      }
    }

    $('.refresh', panel).addEventListener('click', check);
    return { id: 'health', label: 'Health', panel, show: check };
  }

  // ---------------------------------------------------------------- start

  function start() {
    $('#login-form').addEventListener('submit', login);
    $('#token-form').addEventListener('submit', pasteToken);
    $('#signout').addEventListener('click', () => signOut('Signed out.'));
    uploads.setUp();
    let kept = null;
    try {
      kept = sessionStorage.getItem(TOKEN_KEY);
    } catch {
      kept = null;
    }
    if (kept) {
      useToken(kept).then((ok) => {
        if (!ok) signOut($('#signin-message').textContent);
      });
    } else {
      signOut('');
    }
  }

  start();
})();
