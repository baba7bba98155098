// Chorus admin console: a plain-JS single page app over REST v1 (/v1/...) and
// the admin API (/admin/v1/...). Signing in trades the credentials (account
// SID + auth token, or API key SID + secret) for a short-lived console
// session (POST /admin/v1/Session); the secret is then forgotten, and only
// the session token is kept, in this closure's memory (never in
// sessionStorage, localStorage or a cookie, where scripts of other pages on
// the origin could read it). It goes out as "Authorization: Bearer" on every
// fetch and is renewed before it expires; a reload signs out. Live views use
// the official twilio-sync browser SDK with an access token minted by
// POST /admin/v1/Tokens.
'use strict';

(function () {
  // Older consoles kept the credentials here; drop them if still present.
  const LEGACY_CREDS_KEY = 'chorus.console.creds';
  try {
    sessionStorage.removeItem(LEGACY_CREDS_KEY);
  } catch {
    // storage disabled: nothing to drop
  }
  const KINDS = {
    documents: { label: 'Documents', one: 'document', coll: 'Documents', sdk: 'document', prefix: 'ET' },
    lists: { label: 'Lists', one: 'list', coll: 'Lists', sdk: 'list', prefix: 'ES' },
    maps: { label: 'Maps', one: 'map', coll: 'Maps', sdk: 'map', prefix: 'MP' },
    streams: { label: 'Streams', one: 'stream', coll: 'Streams', sdk: 'stream', prefix: 'TO' },
  };
  const PAGE_SIZE = 20;

  const main = document.getElementById('main');
  const $ = (id) => document.getElementById(id);

  // Test and debugging hooks.
  const consoleState = (window.chorusConsole = { route: null, live: null, stats: null, liveEvents: 0 });

  // ------------------------------------------------------------------ DOM

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function setView(...nodes) {
    main.replaceChildren(...nodes);
  }

  function fmtDate(s) {
    if (!s) return '–';
    const d = new Date(s);
    if (isNaN(d)) return s;
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function fmtDuration(sec) {
    sec = Math.max(0, Math.round(sec));
    const d = Math.floor(sec / 86400);
    const hh = Math.floor((sec % 86400) / 3600);
    const m = Math.floor((sec % 3600) / 60);
    const s = sec % 60;
    if (d) return `${d}d ${hh}h`;
    if (hh) return `${hh}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  function ttlText(dateExpires) {
    if (!dateExpires) return 'Never expires';
    const left = (new Date(dateExpires) - Date.now()) / 1000;
    return left > 0 ? `Expires in ${fmtDuration(left)}` : 'Expired';
  }

  // ------------------------------------------------------------ exact JSON

  // Sync data is JSON, and REST keeps its numbers as written:
  // 12345678901234567891 or 1.0000000000000000001 are stored exactly, while a
  // JavaScript number rounds them (to 12345678901234567000 and 1). The
  // console must never write back a value it rounded. Where JSON.parse hands
  // its reviver the source text (context.source) and JSON.rawJSON exists
  // (Chromium 114+), every number whose text String(number) would not give
  // back (by value: 1.0 is 1), and every integer beyond 2^53, is kept as
  // JSON.rawJSON(text): JSON.stringify, and so pretty() and every write,
  // emits that text unchanged. Elsewhere such numbers are only
  // found: they are shown with a warning, and a save holding them refused.
  const EXACT_JSON = (() => {
    try {
      if (typeof JSON.rawJSON !== 'function' || typeof JSON.isRawJSON !== 'function') return false;
      let seen = null;
      JSON.parse('[1.0]', (k, v, ctx) => {
        if (k === '0') seen = ctx && ctx.source;
        return v;
      });
      return seen === '1.0' && JSON.stringify([JSON.rawJSON('1.0')]) === '[1.0]';
    } catch {
      return false;
    }
  })();
  consoleState.exactJSON = EXACT_JSON;
  const INEXACT_TEXT = 'This value holds numbers the browser cannot represent exactly; edit it through the REST API.';

  const isRaw = (v) => EXACT_JSON && JSON.isRawJSON(v);

  function keepSource(key, value, context) {
    if (typeof value !== 'number' || !context || typeof context.source !== 'string') return value;
    const src = context.source;
    // 1.0 or 1e-07 are still what they say; 9007199254740993 is not, and
    // 1e20, exact, keeps its text so that it never passes for rounded.
    if ((Number.isInteger(value) && !Number.isSafeInteger(value)) || numKey(src) !== numKey(String(value))) return JSON.rawJSON(src);
    return value;
  }

  // A JSON number's value as sign, digits and exponent ("1.50e1" and "15"
  // give the same), or null for text that is no JSON number ("Infinity").
  function numKey(s) {
    const m = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(s);
    if (!m) return null;
    const frac = m[3] || '';
    let digits = (m[2] + frac).replace(/^0+/, '');
    if (!digits) return '0';
    let exp = Number(m[4] || 0) - frac.length;
    const zeros = digits.length - digits.replace(/0+$/, '').length;
    digits = digits.slice(0, digits.length - zeros);
    exp += zeros;
    return `${m[1]}${digits}e${exp}`;
  }

  // The values JSON.parse gives to the numbers of a JSON text that it
  // cannot hold exactly. The text must be valid JSON: strings are skipped
  // whole, so every other match is a number.
  function inexactNumbers(text) {
    const out = [];
    for (const [tok] of text.matchAll(/"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g)) {
      if (tok[0] === '"') continue;
      const n = Number(tok);
      const k = numKey(tok);
      if (k === null || k !== numKey(String(n))) out.push(n);
    }
    return out;
  }

  // Without source text access: the objects and arrays of parsed responses
  // that hold a number the response had to round.
  const rounded = new WeakSet();

  // Parses JSON text, keeping every number exactly where the browser can;
  // elsewhere marking what was rounded (see mayBeRounded).
  function parseJSON(text) {
    if (EXACT_JSON) return JSON.parse(text, keepSource);
    const inexact = new Set(inexactNumbers(text));
    if (!inexact.size) return JSON.parse(text);
    return JSON.parse(text, function (key, value) {
      if ((typeof value === 'number' && inexact.has(value)) || (value !== null && typeof value === 'object' && rounded.has(value))) rounded.add(this);
      return value;
    });
  }

  // Whether v may not be the value the server holds: it has an integer
  // beyond 2^53 (as the SDK's own JSON.parse gives them), or, without source
  // text access, a number its response had to round.
  function mayBeRounded(v) {
    if (typeof v === 'number') return Number.isInteger(v) && !Number.isSafeInteger(v);
    if (v === null || typeof v !== 'object' || isRaw(v)) return false;
    return rounded.has(v) || Object.values(v).some(mayBeRounded);
  }

  // Pretty JSON that keeps short arrays and objects on one line, so that a
  // tic-tac-toe board reads as three rows rather than fifteen lines.
  function oneLine(v) {
    const s = JSON.stringify(v, null, 1);
    if (s === undefined) return 'null';
    // JSON escapes newlines inside strings, so every newline here is layout.
    return s.replace(/([[{])\n */g, '$1').replace(/\n *([\]}])/g, '$1').replace(/\n */g, ' ');
  }
  function pretty(v, indent = '', top = true) {
    const flat = oneLine(v);
    if (v === null || typeof v !== 'object' || isRaw(v) || (!top && flat.length + indent.length <= 72) || flat.length <= 2) return flat;
    const inner = indent + '  ';
    if (Array.isArray(v)) return '[\n' + v.map((x) => inner + pretty(x, inner, false)).join(',\n') + '\n' + indent + ']';
    return '{\n' + Object.entries(v).map(([k, x]) => inner + JSON.stringify(k) + ': ' + pretty(x, inner, false)).join(',\n') + '\n' + indent + '}';
  }

  function notice(kind, ...children) {
    return h('div', { class: `notice ${kind}`, role: kind === 'error' || kind === 'conflict' ? 'alert' : 'status' }, ...children);
  }

  // ------------------------------------------------------------ credentials

  // The console session: { token, username, expiresAt }, in memory only.
  let session = null;
  let renewTimer = null;

  function loadCreds() {
    return session && Date.now() < session.expiresAt ? session : null;
  }

  function basic(c) {
    const bytes = new TextEncoder().encode(`${c.username}:${c.password}`);
    let bin = '';
    bytes.forEach((b) => (bin += String.fromCharCode(b)));
    return 'Basic ' + btoa(bin);
  }

  function setSession(s) {
    session = { token: s.token, username: s.credential_sid, expiresAt: Date.now() + s.expires_in * 1000 };
    consoleState.sessionExpiresAt = session.expiresAt;
    clearTimeout(renewTimer);
    // Renew at two thirds of the lifetime.
    renewTimer = setTimeout(renewSession, Math.max(5, s.expires_in * 2 / 3) * 1000);
  }

  async function renewSession() {
    if (!session) return;
    try {
      setSession(await api('POST', '/admin/v1/Session'));
      consoleState.sessionRenewals = (consoleState.sessionRenewals || 0) + 1;
    } catch (e) {
      if (e.status !== 401) renewTimer = setTimeout(renewSession, 5000); // 401: api() signed out
    }
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.code;
      this.body = body;
    }
  }

  // Fetches path with the console session (or, to sign in, with opts.creds
  // as HTTP Basic). credentials:'omit' keeps the browser from popping up its
  // own Basic-auth dialog on a 401.
  async function api(method, path, opts = {}) {
    const creds = opts.creds || loadCreds();
    if (!creds) {
      if (session) signOut('Your console session expired. Please sign in again.');
      throw new ApiError(401, { code: 20003, message: 'Not signed in' });
    }
    const auth = opts.creds ? basic(opts.creds) : 'Bearer ' + creds.token;
    const headers = { Authorization: auth, Accept: 'application/json', ...(opts.headers || {}) };
    let body;
    if (opts.form) {
      body = new URLSearchParams(opts.form).toString();
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
    }
    const res = await fetch(path, { method, headers, body, credentials: 'omit', cache: 'no-store' });
    let data = null;
    if (res.status !== 204) {
      try {
        data = parseJSON(await res.text());
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = new ApiError(res.status, data);
      if (res.status === 401 && !opts.creds) signOut('Your credentials were refused (HTTP 401). Please sign in again.');
      throw err;
    }
    return data;
  }

  // Paging URLs from REST are absolute (built from the server's public URL);
  // fetch them relative to this origin.
  function localPath(u) {
    if (!u) return null;
    const url = new URL(u, location.origin);
    return url.pathname + url.search;
  }

  function svcPath(svc) {
    return `/v1/Services/${encodeURIComponent(svc)}`;
  }
  function objPath(svc, kind, id) {
    return `${svcPath(svc)}/${KINDS[kind].coll}/${encodeURIComponent(id)}`;
  }

  // -------------------------------------------------------------- live SDK

  const clients = new Map(); // service SID -> Promise<Twilio.Sync.Client>

  function syncClient(serviceSid) {
    if (!clients.has(serviceSid)) {
      const p = (async () => {
        const mint = () => api('POST', '/admin/v1/Tokens', { form: { ServiceSid: serviceSid, Identity: 'console' } });
        const { token } = await mint();
        const client = new Twilio.Sync.Client(token, {
          cdsUri: location.origin,
          twilsock: { uri: (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v3/wsconnect' },
          retryPolicy: { min: 500, max: 5000, randomness: 0.2 },
          Sync: { enableSessionStorage: false },
        });
        const renew = async () => {
          try {
            await client.updateToken((await mint()).token);
          } catch (e) {
            console.warn('console: token renewal failed', e);
          }
        };
        client.on('tokenAboutToExpire', renew);
        client.on('tokenExpired', renew);
        return client;
      })();
      p.catch(() => clients.delete(serviceSid));
      clients.set(serviceSid, p);
    }
    return clients.get(serviceSid);
  }

  async function shutdownClients() {
    const all = [...clients.values()];
    clients.clear();
    await Promise.all(all.map((p) => p.then((c) => c.shutdown()).catch(() => {})));
  }

  // A badge that follows the SDK client's connection state.
  function liveBadge() {
    const text = h('span', { text: 'Connecting live view…' });
    const el = h('span', { class: 'live', id: 'live-state', dataset: { state: 'connecting' }, role: 'status' },
      h('span', { class: 'dot', 'aria-hidden': 'true' }), text);
    return {
      el,
      set(state, label) {
        el.dataset.state = state;
        text.textContent = label;
      },
    };
  }

  // ---------------------------------------------------------------- routing

  let cleanup = [];
  function runCleanup() {
    const fns = cleanup;
    cleanup = [];
    for (const fn of fns) {
      try {
        fn();
      } catch (e) {
        console.warn(e);
      }
    }
  }

  // The hash's path segments, decoded; null when one is not valid
  // percent-encoding (#/services/%), which decodeURIComponent throws on.
  function parseRoute() {
    try {
      return location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
    } catch (e) {
      if (e instanceof URIError) return null;
      throw e;
    }
  }

  function renderNotFound() {
    setView(h('div', { class: 'page', id: 'not-found' },
      notice('error', h('strong', {}, 'Page not found. '), 'This console address is not valid: ', h('code', {}, location.hash), '.'),
      h('p', {}, h('a', { href: '#/services' }, 'Back to the services'))));
  }

  function go(...parts) {
    location.hash = '#/' + parts.map(encodeURIComponent).join('/');
  }

  async function route() {
    runCleanup();
    nav = { stack: [] };
    const creds = loadCreds();
    const parts = parseRoute();
    consoleState.route = parts ? parts.join('/') : null;
    if (!creds) {
      showChrome(false);
      renderLogin();
      return;
    }
    showChrome(true, creds);
    if (!parts) {
      renderNotFound();
      main.focus({ preventScroll: true });
      return;
    }
    try {
      if (parts[0] === 'services' && parts[1] && KINDS[parts[2]] && parts[3]) {
        await renderObject(parts[1], parts[2], parts[3]);
      } else if (parts[0] === 'services' && parts[1]) {
        await renderCollection(parts[1], KINDS[parts[2]] ? parts[2] : 'documents');
      } else {
        await renderServices();
      }
    } catch (e) {
      if (e.status === 401) return; // signOut already re-rendered
      setView(h('div', { class: 'page' }, notice('error', h('strong', {}, 'Could not load this page. '), errText(e))));
    }
    main.focus({ preventScroll: true });
  }

  function errText(e) {
    if (e instanceof ApiError) return `${e.message} (HTTP ${e.status}${e.code ? `, error ${e.code}` : ''})`;
    return String((e && e.message) || e);
  }

  // ------------------------------------------------------------ chrome

  let statsTimer = null;
  function showChrome(on, creds) {
    $('topbar').hidden = !on;
    $('foot').hidden = !on;
    if (on) {
      $('who').textContent = creds.username;
      $('who').title = `Signed in as ${creds.username}`;
      if (!statsTimer) {
        pollStats();
        statsTimer = setInterval(pollStats, 2000);
      }
    } else if (statsTimer) {
      clearInterval(statsTimer);
      statsTimer = null;
    }
  }

  async function pollStats() {
    try {
      const s = await api('GET', '/admin/v1/Stats');
      consoleState.stats = s;
      const num = (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString());
      $('stat-connections').textContent = num(s.connections);
      $('stat-subscriptions').textContent = num(s.subscriptions);
      $('stat-eps').textContent = (s.events_per_second || 0).toFixed(s.events_per_second >= 10 ? 0 : 1);
      $('stat-writes').textContent = num(s.writes);
      $('stat-uptime').textContent = fmtDuration(s.uptime_seconds || 0);
      $('stats').classList.remove('stale');
    } catch (e) {
      $('stats').classList.add('stale');
    }
  }

  // Ends the session on the server too (DELETE /admin/v1/Session): a copy
  // of its token taken earlier is refused from then on, on every node, and
  // cannot be renewed. Best effort: a session the server cannot hear about
  // ends at its expiry, within 15 minutes, as nothing renews it any more.
  function endSession() {
    const ending = session;
    if (!ending || Date.now() >= ending.expiresAt) return;
    fetch('/admin/v1/Session', {
      method: 'DELETE', headers: { Authorization: 'Bearer ' + ending.token },
      credentials: 'omit', cache: 'no-store', keepalive: true,
    }).catch(() => {});
  }

  function signOut(message) {
    endSession();
    session = null;
    clearTimeout(renewTimer);
    shutdownClients();
    runCleanup();
    showChrome(false);
    if (location.hash !== '' && location.hash !== '#/login') history.replaceState(null, '', '#/login');
    renderLogin(message);
  }

  // ------------------------------------------------------------ login

  function renderLogin(message) {
    const err = h('div', { id: 'login-error', 'aria-live': 'assertive' });
    if (message) err.append(notice('error', message));
    const user = h('input', {
      id: 'login-user', name: 'username', autocomplete: 'username', required: true, spellcheck: 'false',
      placeholder: 'AC… or SK…', pattern: '(AC|SK)[0-9a-f]{32}', title: 'AC or SK followed by 32 hex digits',
      'aria-describedby': 'login-user-help',
    });
    const pass = h('input', { id: 'login-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const submit = h('button', { class: 'btn primary block', type: 'submit', id: 'login-submit' }, 'Sign in');
    const form = h('form', { id: 'login-form', class: 'login-form', novalidate: true },
      h('label', { for: 'login-user' }, 'Account SID or API key SID'),
      user,
      h('p', { class: 'help', id: 'login-user-help' }, 'Shown in the server log on first start, or by ', h('code', {}, 'chorus admin credentials'), '.'),
      h('label', { for: 'login-pass' }, 'Auth token or API key secret'),
      pass,
      err,
      submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const creds = { username: user.value.trim(), password: pass.value };
      err.replaceChildren();
      if (!/^(AC|SK)[0-9a-f]{32}$/.test(creds.username) || !creds.password) {
        err.append(notice('error', 'Enter an Account SID (AC…) with its auth token, or an API key SID (SK…) with its secret.'));
        return;
      }
      submit.disabled = true;
      submit.textContent = 'Signing in…';
      try {
        const s = await api('POST', '/admin/v1/Session', { creds });
        creds.password = ''; // only the session is kept
        setSession(s);
        if (!location.hash || location.hash === '#/login') location.hash = '#/services';
        else route();
      } catch (e) {
        pass.value = '';
        err.append(notice('error',
          h('strong', {}, e.status === 401 ? 'Access denied. ' : 'Sign-in failed. '),
          e.status === 401
            ? 'Those credentials were refused (HTTP 401, error 20003). Check the SID and its secret; nothing was loaded.'
            : errText(e)));
        pass.focus();
      } finally {
        submit.disabled = false;
        submit.textContent = 'Sign in';
      }
    });
    setView(h('div', { class: 'login-wrap' },
      h('section', { class: 'card login', 'aria-labelledby': 'login-h' },
        h('div', { class: 'login-brand' }, h('span', { class: 'logo big', 'aria-hidden': 'true' }, '♪'),
          h('div', {}, h('h1', { id: 'login-h' }, 'Chorus console'), h('p', { class: 'muted' }, 'Sign in with the credentials of your account.'))),
        form)));
    user.focus();
  }

  // ------------------------------------------------------------ services

  async function renderServices(pageUrl) {
    pageUrl = pageUrl || '/v1/Services?PageSize=' + PAGE_SIZE;
    const data = await api('GET', pageUrl);
    const rows = data.services.map((s) =>
      h('tr', { class: 'row-link', dataset: { sid: s.sid }, onclick: () => go('services', s.sid, 'documents') },
        h('td', {}, h('a', { href: `#/services/${s.sid}/documents` }, s.friendly_name || s.unique_name || s.sid)),
        h('td', { class: 'mono small' }, s.sid),
        h('td', {}, s.unique_name || h('span', { class: 'muted' }, '–')),
        h('td', {}, s.acl_enabled ? h('span', { class: 'chip' }, 'ACL on') : h('span', { class: 'muted' }, 'off')),
        h('td', { class: 'nowrap' }, fmtDate(s.date_created))));
    setView(h('div', { class: 'page' },
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('span', {}, 'Services')),
      h('div', { class: 'page-head' }, h('h1', {}, 'Services'),
        h('p', { class: 'muted' }, 'Each service is an isolated namespace of documents, lists, maps and streams.')),
      h('div', { class: 'card flush' },
        rows.length
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'services-table' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'SID'), h('th', {}, 'Unique name'), h('th', {}, 'ACL'), h('th', {}, 'Created'))),
            h('tbody', {}, rows)))
          : h('p', { class: 'empty' }, 'No services yet.'),
        pager(data.meta, (u) => renderServices(u), pageUrl)),
      webhooksPanel()));
  }

  // ------------------------------------------------------------ webhooks

  // The webhook health of each service (GET /admin/v1/Webhooks): state,
  // backlog, counters and recent failures with their status codes.
  function webhooksPanel() {
    const body = h('div', { id: 'webhooks-body' }, h('p', { class: 'empty' }, 'Loading…'));
    const refresh = h('button', { class: 'btn small', type: 'button', id: 'webhooks-refresh' }, 'Refresh');
    const load = async () => {
      try {
        const data = await api('GET', '/admin/v1/Webhooks');
        consoleState.webhooks = data;
        body.replaceChildren(renderWebhooks(data.services || []));
      } catch (e) {
        if (e.status === 401) return;
        body.replaceChildren(notice('error', errText(e)));
      }
    };
    refresh.addEventListener('click', load);
    load();
    return h('section', { class: 'card', id: 'webhooks-panel', 'aria-labelledby': 'webhooks-title' },
      h('div', { class: 'card-head' }, h('h2', { id: 'webhooks-title' }, 'Webhooks'), refresh),
      body);
  }

  function renderWebhooks(services) {
    const withHooks = services.filter((s) => s.webhook_url || s.pending || s.recent_failures.length);
    if (!withHooks.length) return h('p', { class: 'empty' }, 'No service has a webhook URL.');
    const chip = (state) => h('span', { class: state === 'failing' || state === 'retrying' ? 'chip warn' : 'chip', dataset: { state } }, state);
    const rows = withHooks.map((s) => {
      const failures = s.recent_failures.slice(0, 5).map((f) =>
        h('li', { class: 'small' },
          h('span', { class: 'mono' }, f.status ? `HTTP ${f.status}` : 'no answer'), ' ',
          h('span', { class: 'muted' }, `${fmtDate(f.time)} · ${f.event_type} · ${f.outcome} · attempt ${f.attempt}`), ' ',
          f.error));
      return h('tr', { dataset: { sid: s.service_sid } },
        h('td', {}, h('div', { class: 'mono small' }, s.service_sid), h('div', { class: 'small muted' }, s.webhook_url || '–')),
        h('td', {}, chip(s.state), s.paused_until ? h('div', { class: 'small muted' }, `paused until ${fmtDate(s.paused_until)}`) : null),
        h('td', { class: 'num' }, String(s.pending), s.pending ? h('div', { class: 'small muted' }, `oldest ${fmtDuration(s.oldest_pending_age_seconds)}`) : null),
        h('td', { class: 'small nowrap' }, `${s.sent} sent · ${s.failed} failed · ${s.retried} retried · ${s.abandoned} abandoned`),
        h('td', {}, failures.length ? h('ul', { class: 'failures' }, failures) : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'abandoned-cell' }, abandonedCell(s)));
    });
    return h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'webhooks-table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Service'), h('th', {}, 'Health'), h('th', {}, 'Pending'), h('th', {}, 'This node'),
        h('th', {}, 'Recent failures'), h('th', {}, 'Given up on, kept'))),
      h('tbody', {}, rows)));
  }

  // The webhooks given up on that the service keeps: how many, the newest
  // of them on demand, and Replay (send them again, once the receiver is
  // back) and Purge (asks twice) buttons.
  function abandonedCell(s) {
    const n = s.abandoned_kept || 0;
    if (!n) return h('span', { class: 'muted' }, 'none');
    const base = `/admin/v1/Webhooks/${encodeURIComponent(s.service_sid)}/Abandoned`;
    const out = h('div', { class: 'small', 'aria-live': 'polite' });
    const show = h('button', { class: 'btn small', type: 'button', dataset: { action: 'show-abandoned' } }, 'Show');
    const replay = h('button', { class: 'btn small', type: 'button', dataset: { action: 'replay-abandoned' } }, 'Replay');
    const purge = h('button', { class: 'btn small', type: 'button', dataset: { action: 'purge-abandoned' } }, 'Purge');
    const busy = (on) => [show, replay, purge].forEach((b) => (b.disabled = on));
    const run = async (fn) => {
      busy(true);
      try {
        await fn();
      } catch (e) {
        if (e.status !== 401) out.replaceChildren(notice('error', errText(e)));
      } finally {
        busy(false);
      }
    };
    show.addEventListener('click', () => run(async () => {
      const page = await api('GET', `${base}?PageSize=20`);
      const items = page.abandoned.map((a) => h('li', { class: 'small' },
        h('span', { class: 'mono' }, a.last_status ? `HTTP ${a.last_status}` : 'no answer'), ' ',
        h('span', { class: 'muted' }, `${fmtDate(a.date_abandoned)} · ${a.event_type} · ${a.object_sid || a.identity || ''} · ${a.attempts} attempts`), ' ',
        a.reason));
      const list = h('ul', { class: 'failures abandoned-list' }, items);
      if (n > items.length) out.replaceChildren(list, h('div', { class: 'muted' }, `the newest ${items.length} of ${n}`));
      else out.replaceChildren(list);
    }));
    replay.addEventListener('click', () => run(async () => {
      const r = await api('POST', `${base}/Replay`);
      out.replaceChildren(notice('info', `${r.replayed} sent again${r.left ? `, ${r.left} left (the outbox is full)` : ''}.`));
    }));
    let armed = false;
    purge.addEventListener('click', () => {
      if (!armed) {
        // Ask with the count as it is now, not as this panel last loaded
        // it: the purge deletes every webhook the service keeps.
        run(async () => {
          const all = await api('GET', '/admin/v1/Webhooks');
          const now = ((all.services || []).find((x) => x.service_sid === s.service_sid) || {}).abandoned_kept || 0;
          if (!now) {
            out.replaceChildren(notice('info', 'Nothing to purge: none is kept any more.'));
            return;
          }
          armed = true;
          purge.textContent = `Purge ${now}: sure?`;
          setTimeout(() => { armed = false; purge.textContent = 'Purge'; }, 5000);
        });
        return;
      }
      armed = false;
      purge.textContent = 'Purge';
      run(async () => {
        const r = await api('DELETE', base);
        out.replaceChildren(notice('info', `${r.purged} deleted.`));
      });
    });
    return h('div', {}, h('div', { class: 'num', dataset: { kept: String(n) } }, String(n)),
      h('div', { class: 'btn-row' }, show, replay, purge), out);
  }

  // Paging follows meta.next_page_url / previous_page_url. Where the server
  // gives no previous_page_url, the pages visited so far (nav.stack) serve.
  let nav = { stack: [] };
  function pager(meta, load, currentUrl) {
    const back = meta && meta.previous_page_url ? localPath(meta.previous_page_url) : nav.stack[nav.stack.length - 1];
    if (!meta || (!meta.next_page_url && !back)) return null;
    const prev = h('button', { class: 'btn small', type: 'button', id: 'page-prev', disabled: !back }, '← Previous');
    const next = h('button', { class: 'btn small', type: 'button', id: 'page-next', disabled: !meta.next_page_url }, 'Next →');
    prev.addEventListener('click', () => {
      nav.stack.pop();
      load(back).catch(showError);
    });
    next.addEventListener('click', () => {
      nav.stack.push(currentUrl);
      load(localPath(meta.next_page_url)).catch(showError);
    });
    return h('div', { class: 'pager' }, prev, h('span', { class: 'muted small' }, `Page ${(meta.page || 0) + 1}`), next);
  }

  function showError(e) {
    if (e.status === 401) return;
    main.prepend(notice('error', errText(e)));
  }

  // ----------------------------------------------------------- collections

  function serviceHeader(svc, service, kind) {
    const name = service ? service.friendly_name || service.unique_name || service.sid : svc;
    return [
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
        h('a', { href: '#/services' }, 'Services'), h('span', { 'aria-hidden': 'true' }, '/'), h('span', {}, name)),
      h('div', { class: 'page-head' }, h('h1', {}, name), h('p', { class: 'mono small muted' }, service ? service.sid : svc)),
      h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Object kinds' },
        Object.entries(KINDS).map(([k, v]) => h('a', {
          role: 'tab', class: 'tab', href: `#/services/${encodeURIComponent(svc)}/${k}`,
          'aria-selected': String(k === kind), id: `tab-${k}`,
        }, v.label))),
    ];
  }

  async function renderCollection(svc, kind, pageUrl) {
    const K = KINDS[kind];
    pageUrl = pageUrl || `${svcPath(svc)}/${K.coll}?PageSize=${PAGE_SIZE}`;
    const [service, data] = await Promise.all([api('GET', svcPath(svc)), api('GET', pageUrl)]);
    const list = data[kind] || [];
    const searchMsg = h('div', { id: 'search-message', 'aria-live': 'polite' });
    const q = h('input', {
      id: 'search', type: 'search', placeholder: `Unique name or SID (${K.prefix}…)`, 'aria-label': `Find a ${K.one} by unique name or SID`,
      autocomplete: 'off', spellcheck: 'false',
    });
    const search = h('form', { class: 'search', role: 'search' }, q, h('button', { class: 'btn', type: 'submit' }, 'Open'));
    search.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = q.value.trim();
      searchMsg.replaceChildren();
      if (!name) return;
      try {
        const o = await api('GET', objPath(svc, kind, name));
        go('services', svc, kind, o.sid);
      } catch (e) {
        if (e.status === 401) return;
        searchMsg.append(notice(e.status === 404 ? 'info' : 'error',
          e.status === 404 ? `No ${K.one} named “${name}” in this service.` : errText(e)));
      }
    });

    const cols = ['Unique name', 'SID'];
    if (kind === 'documents') cols.push('Revision');
    cols.push('Updated', 'Expires');
    const rows = list.map((o) =>
      h('tr', { class: 'row-link obj-row', dataset: { sid: o.sid, name: o.unique_name || '' }, onclick: () => go('services', svc, kind, o.sid) },
        h('td', {}, h('a', { href: `#/services/${encodeURIComponent(svc)}/${kind}/${o.sid}` }, o.unique_name || h('em', { class: 'muted' }, 'unnamed'))),
        h('td', { class: 'mono small' }, o.sid),
        kind === 'documents' ? h('td', { class: 'mono' }, o.revision) : null,
        h('td', { class: 'nowrap' }, fmtDate(o.date_updated)),
        h('td', { class: 'nowrap' }, o.date_expires ? h('span', { class: 'chip warn', title: o.date_expires }, ttlText(o.date_expires)) : h('span', { class: 'muted' }, 'never'))));

    setView(h('div', { class: 'page' },
      serviceHeader(svc, service, kind),
      h('div', { class: 'toolbar' }, search, h('span', { class: 'muted small' }, `${list.length} shown`)),
      searchMsg,
      h('div', { class: 'card flush' },
        rows.length
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'objects-table' },
            h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c)))), h('tbody', {}, rows)))
          : h('p', { class: 'empty' }, `No ${K.label.toLowerCase()} in this service yet.`),
        pager(data.meta, (u) => renderCollection(svc, kind, u), pageUrl))));
  }

  // ------------------------------------------------------------- objects

  async function renderObject(svc, kind, id) {
    const K = KINDS[kind];
    const [service, obj] = await Promise.all([api('GET', svcPath(svc)), api('GET', objPath(svc, kind, id))]);
    if (obj.sid !== id) {
      // Opened by unique name: switch the address to the SID.
      history.replaceState(null, '', `#/services/${encodeURIComponent(svc)}/${kind}/${obj.sid}`);
    }
    const state = { svc, kind, obj, service };
    const badge = liveBadge();
    const meta = h('dl', { class: 'meta', id: 'object-meta' });
    const renderMeta = () => {
      const o = state.obj;
      const items = [
        ['SID', h('span', { class: 'mono' }, o.sid)],
        ['Unique name', o.unique_name || h('span', { class: 'muted' }, '–')],
      ];
      if (o.revision !== undefined) items.push(['Revision', h('span', { class: 'mono', id: 'object-revision' }, o.revision)]);
      items.push(
        ['TTL', h('span', { id: 'object-ttl', title: o.date_expires || '' }, ttlText(o.date_expires), o.date_expires ? h('span', { class: 'muted small' }, ` (${fmtDate(o.date_expires)})`) : null)],
        ['Created', `${fmtDate(o.date_created)}${o.created_by ? ` by ${o.created_by}` : ''}`],
        ['Updated', h('span', { id: 'object-updated' }, fmtDate(o.date_updated))]);
      meta.replaceChildren(...items.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
    };
    renderMeta();
    const ttlTick = setInterval(() => {
      const el = $('object-ttl');
      if (el && state.obj.date_expires) el.firstChild.textContent = ttlText(state.obj.date_expires);
    }, 1000);
    cleanup.push(() => clearInterval(ttlTick));

    const body = h('div', { class: 'object-body' });
    setView(h('div', { class: 'page' },
      serviceHeader(svc, service, kind),
      h('nav', { class: 'crumbs sub', 'aria-label': 'Object' },
        h('a', { href: `#/services/${encodeURIComponent(svc)}/${kind}` }, `← All ${K.label.toLowerCase()}`)),
      h('div', { class: 'object-head' },
        h('div', {}, h('span', { class: 'kind' }, K.one), h('h2', { class: 'object-title' }, obj.unique_name || obj.sid)),
        badge.el),
      h('div', { class: 'card' }, meta),
      body));

    let close = () => {};
    cleanup.push(() => close());
    if (kind === 'documents') close = await documentView(state, body, badge, renderMeta);
    else if (kind === 'lists' || kind === 'maps') close = await collectionView(state, body, badge, renderMeta);
    else close = await streamView(state, body, badge);

    if (kind !== 'streams') body.append(await permissionsCard(state));
  }

  // Opens obj through the SDK and wires the badge; returns {client, entity}.
  async function openLive(state, badge, alive) {
    try {
      const client = await syncClient(state.obj.service_sid || state.svc);
      if (!alive()) return null;
      const label = { connected: 'Live', connecting: 'Connecting…', disconnected: 'Reconnecting…', retrying: 'Reconnecting…', denied: 'Live view denied', error: 'Live view error' };
      const onState = (s) => badge.set(s, label[s] || s);
      client.on('connectionStateChanged', onState);
      cleanup.push(() => client.removeListener('connectionStateChanged', onState));
      onState(client.connectionState);
      const entity = await client[KINDS[state.kind].sdk]({ id: state.obj.sid, mode: 'open_existing' });
      if (!alive()) {
        entity.close();
        return null;
      }
      consoleState.live = { kind: state.kind, sid: state.obj.sid };
      return { client, entity };
    } catch (e) {
      let why = `Live view unavailable: ${e.message || e}`;
      if (e.code === 54007 || e.status === 403) {
        // The console watches through the SDK as the identity "console".
        why += state.kind === 'streams'
          ? ' (this service has ACLs on, and streams have no permissions: no SDK client can watch a stream here)'
          : ' (this service has ACLs on: give the identity "console" read permission on this object to watch it live)';
      }
      badge.set('error', why);
      return null;
    }
  }

  function flash(el) {
    el.classList.remove('flash');
    void el.offsetWidth;
    el.classList.add('flash');
  }

  // ---- documents

  // Whether revision a is b or later. Chorus revisions are hexadecimal
  // counters; any other form counts as later.
  function revisionAtLeast(a, b) {
    try {
      return BigInt('0x' + a) >= BigInt('0x' + b);
    } catch {
      return true;
    }
  }

  async function documentView(state, body, badge, renderMeta) {
    let alive = true;
    const dataPre = h('pre', { class: 'json', id: 'object-data', tabindex: '0', 'aria-label': 'Document data' });
    const dataNotes = h('div', { id: 'object-data-notes' });
    const showData = () => {
      dataPre.textContent = pretty(state.obj.data);
      dataNotes.replaceChildren(...(mayBeRounded(state.obj.data)
        ? [Object.assign(notice('warn', h('strong', {}, 'Shown rounded. '), INEXACT_TEXT), { id: 'object-data-warning' })]
        : []));
    };
    showData();
    const editor = jsonEditor({
      id: 'editor',
      title: 'Edit data',
      initial: () => state.obj.data,
      revision: () => state.obj.revision,
      requireObject: true,
      save: async (value, revision) => {
        const o = await api('POST', objPath(state.svc, 'documents', state.obj.sid), {
          form: { Data: JSON.stringify(value) },
          headers: { 'If-Match': revision },
        });
        state.obj = o;
        renderMeta();
        showData();
        return o.revision;
      },
      reload: async () => {
        state.obj = await api('GET', objPath(state.svc, 'documents', state.obj.sid));
        renderMeta();
        showData();
      },
    });
    body.append(h('div', { class: 'grid2' },
      h('section', { class: 'card', 'aria-labelledby': 'data-h' },
        h('div', { class: 'card-head' }, h('h3', { id: 'data-h' }, 'Data'), h('span', { class: 'muted small', id: 'live-note' }, 'Updates appear here as they happen.')),
        dataPre, dataNotes),
      editor.el));

    const live = await openLive(state, badge, () => alive);
    if (live) {
      // The SDK parses the event's data with JSON.parse, which rounds big
      // numbers: what is shown and edited is fetched over REST instead, one
      // fetch at a time, never replacing a newer revision (our own save's).
      let fetching = false;
      let again = false;
      const refetch = async () => {
        if (fetching) {
          again = true;
          return;
        }
        fetching = true;
        try {
          do {
            again = false;
            let o;
            try {
              o = await api('GET', objPath(state.svc, 'documents', state.obj.sid));
            } catch (err) {
              if (alive && err.status !== 401) {
                dataNotes.replaceChildren(notice('error', h('strong', {}, 'Changed, but could not load the latest version. '), errText(err)));
              }
              return;
            }
            if (!alive) return;
            if (!revisionAtLeast(o.revision, state.obj.revision)) continue;
            state.obj = o;
            renderMeta();
            showData();
            flash(dataPre);
            editor.external(o.revision);
          } while (again);
        } finally {
          fetching = false;
        }
      };
      live.entity.on('updated', () => {
        consoleState.liveEvents++;
        refetch();
      });
      live.entity.on('removed', () => {
        badge.set('error', 'Document was removed');
        body.prepend(notice('error', 'This document was deleted.'));
      });
    }
    return () => {
      alive = false;
      if (live) live.entity.close();
    };
  }

  // A JSON editor with If-Match saving. opts: id, title, initial(), revision(),
  // save(value, revision) -> newRevision, reload(), requireObject.
  function jsonEditor(opts) {
    let basis = opts.revision();
    let dirty = false;
    let saving = false; // a save is out
    let seenWhileSaving = null; // the newest revision a live event brought meanwhile
    const ta = h('textarea', {
      id: opts.id, class: 'code', rows: '14', spellcheck: 'false', autocomplete: 'off', 'aria-label': `${opts.title} (JSON)`,
      'aria-describedby': `${opts.id}-hint`,
    });
    const fit = () => {
      ta.rows = Math.min(18, Math.max(6, ta.value.split('\n').length + 1));
    };
    const warn = h('div', { id: `${opts.id}-warning` });
    // A value the browser could only read rounded is shown with a warning
    // (and never saved: see the save button).
    const warnIfRounded = () => {
      warn.replaceChildren(...(mayBeRounded(opts.initial()) ? [notice('warn', h('strong', {}, 'Shown rounded. '), INEXACT_TEXT)] : []));
    };
    ta.value = pretty(opts.initial());
    fit();
    warnIfRounded();
    const msg = h('div', { id: `${opts.id}-message`, class: 'editor-message', 'aria-live': 'polite' });
    const basisEl = h('span', { class: 'mono' }, basis);
    const save = h('button', { class: 'btn primary', type: 'button', id: `${opts.id}-save` }, 'Save');
    const reset = h('button', { class: 'btn', type: 'button', id: `${opts.id}-reset` }, 'Revert');
    const format = h('button', { class: 'btn ghost', type: 'button', id: `${opts.id}-format` }, 'Format');

    ta.addEventListener('input', () => {
      dirty = true;
      msg.replaceChildren();
    });
    format.addEventListener('click', () => {
      try {
        const value = parseJSON(ta.value);
        // Without source text access, formatting would round the numbers.
        if (mayBeRounded(value)) {
          msg.replaceChildren(notice('error', h('strong', {}, 'Not formatted. '), INEXACT_TEXT));
          return;
        }
        ta.value = pretty(value);
      } catch (e) {
        msg.replaceChildren(notice('error', h('strong', {}, 'Invalid JSON: '), e.message));
      }
    });
    const refill = () => {
      basis = opts.revision();
      basisEl.textContent = basis;
      ta.value = pretty(opts.initial());
      fit();
      warnIfRounded();
      dirty = false;
    };
    reset.addEventListener('click', () => {
      refill();
      msg.replaceChildren();
    });
    save.addEventListener('click', async () => {
      msg.replaceChildren();
      let value;
      try {
        value = parseJSON(ta.value);
      } catch (e) {
        msg.append(notice('error', h('strong', {}, 'Invalid JSON — nothing was written. '), e.message));
        ta.focus();
        return;
      }
      if (opts.requireObject && (value === null || typeof value !== 'object' || Array.isArray(value) || isRaw(value))) {
        msg.append(notice('error', h('strong', {}, 'Not saved. '), 'Sync data must be a JSON object, e.g. {"key": "value"}.'));
        return;
      }
      // Never write back a number the browser rounded: neither one typed
      // here nor one of the value loaded (a 1.0000000000000000001 shown as
      // 1 looks like any other 1 in the text).
      if (mayBeRounded(value) || mayBeRounded(opts.initial())) {
        msg.append(notice('error', h('strong', {}, 'Not saved. '), INEXACT_TEXT));
        return;
      }
      save.disabled = true;
      save.textContent = 'Saving…';
      saving = true;
      seenWhileSaving = null;
      let saved = false;
      let conflict = false;
      try {
        const rev = await opts.save(value, basis);
        basis = rev;
        basisEl.textContent = rev;
        ta.value = pretty(value);
        dirty = false;
        saved = true;
        msg.append(notice('ok', `Saved — now at revision ${rev}.`));
        // The live event of this very write often comes before the answer:
        // it is no news. Another writer's, after ours, refreshes the editor.
        if (seenWhileSaving !== null && seenWhileSaving !== String(rev)) refill();
      } catch (e) {
        if (e.status === 412) {
          conflict = true;
          const reload = h('button', { class: 'btn small', type: 'button', id: `${opts.id}-reload` }, 'Reload latest');
          reload.addEventListener('click', async () => {
            try {
              await opts.reload();
              refill();
              msg.replaceChildren(notice('info', 'Reloaded the latest version. Re-apply your change and save again.'));
            } catch (err) {
              msg.replaceChildren(notice('error', errText(err)));
            }
          });
          msg.append(notice('conflict',
            h('strong', {}, 'Conflict — not saved. '),
            `Someone else changed this since you loaded revision ${basis}. `,
            'Reload to see their version, then re-apply your edit. ', reload));
        } else if (e.status !== 401) {
          msg.append(notice('error', h('strong', {}, 'Not saved. '), errText(e)));
        }
      } finally {
        const seen = seenWhileSaving;
        saving = false;
        seenWhileSaving = null;
        // Not saved (other than a conflict, which says so): another
        // writer's change that came meanwhile still deserves its warning.
        if (!saved && !conflict && seen !== null && dirty && seen !== String(basis)) {
          msg.append(notice('info', `Heads-up: the value changed to revision ${seen} while you were editing. Saving will report a conflict.`));
        }
        save.disabled = false;
        save.textContent = 'Save';
      }
    });

    const el = h('section', { class: 'card editor', 'aria-labelledby': `${opts.id}-h` },
      h('div', { class: 'card-head' }, h('h3', { id: `${opts.id}-h` }, opts.title),
        h('span', { class: 'muted small' }, 'If-Match: ', basisEl)),
      warn,
      ta,
      h('p', { class: 'help', id: `${opts.id}-hint` }, 'Saving sends the revision you loaded as If-Match, so a concurrent change is never overwritten.'),
      msg,
      h('div', { class: 'btn-row' }, save, reset, format));
    return {
      el,
      // Another writer changed the value: refresh a pristine editor, warn a
      // dirty one. While a save is out, the event may be that save's own:
      // the save decides when it is answered.
      external(newRevision) {
        if (saving) {
          seenWhileSaving = String(newRevision);
          return;
        }
        if (!dirty) {
          refill();
          return;
        }
        if (String(newRevision) !== String(basis)) {
          msg.replaceChildren(notice('info', `Heads-up: the value changed to revision ${newRevision} while you were editing. Saving will report a conflict.`));
        }
      },
    };
  }

  // ---- lists and maps

  async function collectionView(state, body, badge, renderMeta) {
    let alive = true;
    const isList = state.kind === 'lists';
    const itemsPath = `${objPath(state.svc, state.kind, state.obj.sid)}/Items`;
    let pageUrl = `${itemsPath}?PageSize=${PAGE_SIZE}`;
    let items = [];
    const itemsCard = h('section', { class: 'card flush', 'aria-labelledby': 'items-h' });
    const editorSlot = h('div', { id: 'item-editor-slot' });
    let editing = null; // {ref, editor}

    const refOf = (it) => (isList ? String(it.index) : it.key);
    const itemPath = (ref) => `${itemsPath}/${encodeURIComponent(ref)}`;

    const openEditor = (it) => {
      const ref = refOf(it);
      let current = it;
      const editor = jsonEditor({
        id: 'item-editor',
        title: `Edit item ${isList ? '#' + ref : '“' + ref + '”'}`,
        initial: () => current.data,
        revision: () => current.revision,
        requireObject: true,
        save: async (value, revision) => {
          current = await api('POST', itemPath(ref), { form: { Data: JSON.stringify(value) }, headers: { 'If-Match': revision } });
          await load(pageUrl);
          return current.revision;
        },
        reload: async () => {
          current = await api('GET', itemPath(ref));
          await load(pageUrl);
        },
      });
      editing = { ref, editor, set: (it2) => (current = it2) };
      const closeBtn = h('button', { class: 'btn ghost small', type: 'button', id: 'item-editor-close' }, 'Close editor');
      closeBtn.addEventListener('click', () => {
        editing = null;
        editorSlot.replaceChildren();
      });
      editor.el.querySelector('.btn-row').append(closeBtn);
      editorSlot.replaceChildren(editor.el);
      editor.el.scrollIntoView({ block: 'nearest' });
      editor.el.querySelector('textarea').focus();
    };

    async function load(u) {
      pageUrl = u;
      const data = await api('GET', u);
      if (!alive) return;
      items = data.items || [];
      const rows = items.map((it) => {
        const edit = h('button', { class: 'btn small', type: 'button', 'aria-label': `Edit item ${refOf(it)}` }, 'Edit');
        edit.addEventListener('click', () => openEditor(it));
        return h('tr', { class: 'item-row', dataset: { ref: refOf(it) } },
          h('td', { class: 'mono' }, isList ? it.index : it.key),
          h('td', {}, h('code', { class: 'inline-json', title: oneLine(it.data) }, oneLine(it.data)),
            mayBeRounded(it.data) ? h('span', { class: 'chip warn rounded', title: INEXACT_TEXT }, 'rounded') : null),
          h('td', { class: 'mono' }, it.revision),
          h('td', { class: 'nowrap' }, it.date_expires ? h('span', { class: 'chip warn', title: it.date_expires }, ttlText(it.date_expires)) : h('span', { class: 'muted' }, 'never')),
          h('td', { class: 'nowrap' }, fmtDate(it.date_updated)),
          h('td', {}, edit));
      });
      itemsCard.replaceChildren(...[
        h('div', { class: 'card-head pad' }, h('h3', { id: 'items-h' }, 'Items'), h('span', { class: 'muted small' }, `${items.length} shown`)),
        rows.length
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'items-table' },
            h('thead', {}, h('tr', {}, h('th', {}, isList ? 'Index' : 'Key'), h('th', {}, 'Data'), h('th', {}, 'Revision'), h('th', {}, 'Expires'), h('th', {}, 'Updated'), h('th', {}, h('span', { class: 'sr-only' }, 'Actions')))),
            h('tbody', {}, rows)))
          : h('p', { class: 'empty' }, 'No items yet.'),
        pager(data.meta, (u2) => load(u2), u)].filter(Boolean));
    }
    await load(pageUrl);
    body.append(itemsCard, editorSlot);

    const live = await openLive(state, badge, () => alive);
    let timer = null;
    const onItem = (e) => {
      consoleState.liveEvents++;
      const it = e.item;
      const ref = it ? String(isList ? it.index : it.key) : null;
      if (editing && ref === editing.ref && it) editing.editor.external(it.revision);
      clearTimeout(timer);
      timer = setTimeout(() => {
        load(pageUrl).then(() => {
          const row = ref && itemsCard.querySelector(`tr[data-ref="${CSS.escape(ref)}"]`);
          if (row) flash(row);
        }).catch(() => {});
      }, 120);
    };
    if (live) {
      for (const ev of ['itemAdded', 'itemUpdated', 'itemRemoved']) live.entity.on(ev, onItem);
      live.entity.on('removed', () => badge.set('error', `${KINDS[state.kind].one} was removed`));
    }
    return () => {
      alive = false;
      clearTimeout(timer);
      if (live) live.entity.close();
    };
  }

  // ---- streams

  async function streamView(state, body, badge) {
    let alive = true;
    const tail = h('ol', { class: 'tail', id: 'stream-tail', 'aria-live': 'polite', 'aria-relevant': 'additions' });
    const count = h('span', { class: 'muted small' }, '0 messages');
    let n = 0;
    const add = (msg, isLocal) => {
      n++;
      count.textContent = `${n} message${n === 1 ? '' : 's'}`;
      tail.prepend(h('li', { class: 'tail-item flash', dataset: { sid: msg.sid || '' } },
        h('div', { class: 'tail-meta' }, h('time', {}, fmtDate(new Date().toISOString())), h('span', { class: 'mono small muted' }, msg.sid || ''), isLocal ? h('span', { class: 'chip' }, 'sent here') : null,
          // The SDK parses messages with JSON.parse: big integers arrive rounded.
          mayBeRounded(msg.data) ? h('span', { class: 'chip warn rounded', title: 'This message holds numbers the browser cannot represent exactly: shown rounded.' }, 'rounded') : null),
        h('pre', { class: 'json small' }, pretty(msg.data))));
      while (tail.children.length > 200) tail.lastChild.remove();
    };

    const ta = h('textarea', { id: 'publish-data', class: 'code', rows: '4', spellcheck: 'false', 'aria-label': 'Message data (JSON)' });
    ta.value = '{\n  "hello": "world"\n}';
    const msg = h('div', { id: 'publish-message', 'aria-live': 'polite' });
    const send = h('button', { class: 'btn primary', type: 'button', id: 'publish' }, 'Publish');
    send.addEventListener('click', async () => {
      msg.replaceChildren();
      let value;
      try {
        value = parseJSON(ta.value);
      } catch (e) {
        msg.append(notice('error', h('strong', {}, 'Invalid JSON — nothing was published. '), e.message));
        return;
      }
      if (mayBeRounded(value)) {
        msg.append(notice('error', h('strong', {}, 'Not published. '), 'This message holds numbers the browser cannot represent exactly; publish it through the REST API.'));
        return;
      }
      try {
        await api('POST', `${objPath(state.svc, 'streams', state.obj.sid)}/Messages`, { form: { Data: JSON.stringify(value) } });
      } catch (e) {
        if (e.status !== 401) msg.append(notice('error', errText(e)));
      }
    });

    body.append(h('div', { class: 'grid2' },
      h('section', { class: 'card', 'aria-labelledby': 'tail-h' },
        h('div', { class: 'card-head' }, h('h3', { id: 'tail-h' }, 'Live tail'), count),
        h('p', { class: 'help' }, 'Stream messages are not stored; they appear here as they are published while this page is open.'),
        tail),
      h('section', { class: 'card', 'aria-labelledby': 'pub-h' },
        h('div', { class: 'card-head' }, h('h3', { id: 'pub-h' }, 'Publish a message')),
        ta, msg, h('div', { class: 'btn-row' }, send))));

    const live = await openLive(state, badge, () => alive);
    if (live) {
      live.entity.on('messagePublished', (e) => {
        consoleState.liveEvents++;
        add(e.message, e.isLocal);
      });
      live.entity.on('removed', () => badge.set('error', 'Stream was removed'));
    }
    return () => {
      alive = false;
      if (live) live.entity.close();
    };
  }

  // ---- permissions

  async function permissionsCard(state) {
    const card = h('section', { class: 'card flush', 'aria-labelledby': 'perm-h' });
    try {
      const data = await api('GET', `${objPath(state.svc, state.kind, state.obj.sid)}/Permissions?PageSize=50`);
      const perms = data.permissions || [];
      const yes = (b) => (b ? h('span', { class: 'yes' }, '✓ yes') : h('span', { class: 'muted' }, 'no'));
      const acl = state.service && state.service.acl_enabled;
      card.append(
        h('div', { class: 'card-head pad' }, h('h3', { id: 'perm-h' }, 'Permissions'),
          h('span', { class: 'muted small' }, acl ? 'ACLs are enforced in this service.' : 'ACLs are off in this service: every identity may read and write.')),
        perms.length
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'permissions-table' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Identity'), h('th', {}, 'Read'), h('th', {}, 'Write'), h('th', {}, 'Manage'))),
            h('tbody', {}, perms.map((p) => h('tr', {}, h('td', { class: 'mono' }, p.identity), h('td', {}, yes(p.read)), h('td', {}, yes(p.write)), h('td', {}, yes(p.manage)))))))
          : h('p', { class: 'empty' }, 'No per-identity permissions.'));
    } catch (e) {
      card.append(h('div', { class: 'pad' }, notice('error', 'Could not load permissions: ', errText(e))));
    }
    return card;
  }

  // ------------------------------------------------------------- start

  $('sign-out').addEventListener('click', () => signOut());
  // Leaving the console (closing the tab, reloading) ends its session,
  // unless the browser keeps the page to come back to (back/forward cache).
  window.addEventListener('pagehide', (e) => {
    if (!e.persisted) endSession();
  });
  window.addEventListener('hashchange', route);
  route();
})();
