// Chorus Sync quickstart: a shared tic-tac-toe board in one Sync Document,
// written the way Twilio's Sync quickstart is — fetch an Access Token from
// /token, create Twilio.Sync.Client, open the document, react to 'updated',
// renew the token on tokenAboutToExpire / tokenExpired.
'use strict';

(function () {
  const DOC_NAME = 'SyncGame';
  const LINES = [
    [[0, 0], [0, 1], [0, 2]], [[1, 0], [1, 1], [1, 2]], [[2, 0], [2, 1], [2, 2]],
    [[0, 0], [1, 0], [2, 0]], [[0, 1], [1, 1], [2, 1]], [[0, 2], [1, 2], [2, 2]],
    [[0, 0], [1, 1], [2, 2]], [[0, 2], [1, 1], [2, 0]],
  ];
  const STATE_TEXT = {
    connecting: 'Connecting…',
    connected: 'Connected',
    disconnecting: 'Disconnecting…',
    disconnected: 'Offline — reconnecting…',
    retrying: 'Offline — retrying…',
    denied: 'Access denied',
    error: 'Connection error',
    unknown: 'Unknown',
  };

  const $ = (id) => document.getElementById(id);
  const cells = Array.from(document.querySelectorAll('.cell'));
  const boardEl = $('board');

  // Everything a test (or a curious developer) may want to look at.
  const app = (window.chorusGame = {
    identity: null,
    token: null, // the current access token: presented to /token to renew it
    tokensOff: false, // /token answered 404: the endpoint is off
    client: null,
    doc: null,
    data: null,
    state: 'connecting',
    tokenRenewals: 0,
    ready: false,
    error: null,
    log: [],
  });

  function emptyGame() {
    return {
      board: [['', '', ''], ['', '', ''], ['', '', '']],
      next: 'X',
      lastMove: null,
      winner: null,
      moves: 0,
    };
  }

  // Accept whatever is in the document (another client may have written an
  // older shape, e.g. the classic quickstart's {board} only).
  function normalize(data) {
    const g = emptyGame();
    if (!data || !Array.isArray(data.board)) return g;
    for (let r = 0; r < 3; r++) {
      for (let c = 0; c < 3; c++) {
        const v = data.board[r] && data.board[r][c];
        g.board[r][c] = v === 'X' || v === 'O' ? v : '';
      }
    }
    const filled = g.board.flat().filter(Boolean);
    const xs = filled.filter((v) => v === 'X').length;
    g.moves = filled.length;
    g.next = data.next === 'X' || data.next === 'O' ? data.next : xs > filled.length - xs ? 'O' : 'X';
    g.lastMove = normalMove(data.lastMove);
    g.winner = outcome(g.board);
    return g;
  }

  // A lastMove as this page writes it, from whatever any player wrote:
  // fields of another type are dropped, never shown (an object there would
  // throw in a template string and stop the page rendering).
  function normalMove(lm) {
    if (!lm || typeof lm !== 'object') return null;
    const cell = (n) => (Number.isInteger(n) && n >= 0 && n < 3 ? n : null);
    const mark = lm.mark === 'X' || lm.mark === 'O' ? lm.mark : null;
    const row = cell(lm.row);
    const col = cell(lm.col);
    return {
      by: typeof lm.by === 'string' && lm.by ? lm.by : null,
      mark: mark && row !== null && col !== null ? mark : null,
      row,
      col,
      at: typeof lm.at === 'string' ? lm.at : null,
    };
  }

  // 'X' / 'O' with the winning line, 'draw', or null while the game goes on.
  function outcome(board) {
    for (const line of LINES) {
      const [a, b, c] = line.map(([r, col]) => board[r][col]);
      if (a && a === b && b === c) return { mark: a, line };
    }
    return board.flat().every(Boolean) ? { mark: 'draw', line: [] } : null;
  }

  function cellName(r, c) {
    return 'ABC'[c] + (r + 1);
  }

  function timeStr(d) {
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function log(text, kind) {
    const at = new Date();
    app.log.push({ at: at.toISOString(), text, kind: kind || 'info' });
    const li = document.createElement('li');
    li.className = 'log-' + (kind || 'info');
    const t = document.createElement('time');
    t.dateTime = at.toISOString();
    t.textContent = timeStr(at);
    const span = document.createElement('span');
    span.textContent = text;
    li.append(t, span);
    const list = $('log');
    list.prepend(li);
    while (list.children.length > 30) list.lastChild.remove();
  }

  function setState(state) {
    app.state = state;
    const el = $('status');
    el.dataset.state = state;
    $('status-text').textContent = STATE_TEXT[state] || state;
    render();
  }

  function render() {
    const g = normalize(app.data);
    const live = app.ready && app.state === 'connected';
    const over = g.winner;
    const winCells = new Set(over ? over.line.map(([r, c]) => r + ',' + c) : []);
    for (const btn of cells) {
      const r = +btn.dataset.row;
      const c = +btn.dataset.col;
      const v = g.board[r][c];
      btn.textContent = v;
      btn.dataset.mark = v;
      btn.classList.toggle('win', winCells.has(r + ',' + c));
      btn.classList.toggle('last', !!(g.lastMove && g.lastMove.row === r && g.lastMove.col === c));
      btn.disabled = !live || !!v || !!over;
      btn.setAttribute('aria-label', `${cellName(r, c)}, ${v || 'empty'}`);
    }
    boardEl.setAttribute('aria-busy', String(!app.ready));
    boardEl.classList.toggle('over', !!over);
    $('new-game').disabled = !live;

    const mark = $('turn-mark');
    const text = $('turn-text');
    if (!app.ready) {
      mark.dataset.mark = '';
      mark.textContent = '…';
      text.textContent = app.error ? app.error : 'Loading the board…';
    } else if (over && over.mark === 'draw') {
      mark.dataset.mark = 'draw';
      mark.textContent = '=';
      text.textContent = "It's a draw. Start a new game!";
    } else if (over) {
      mark.dataset.mark = over.mark;
      mark.textContent = over.mark;
      const who = g.lastMove && g.lastMove.by ? ` — ${g.lastMove.by === app.identity ? 'you' : g.lastMove.by}` : '';
      text.textContent = `${over.mark} wins${who}!`;
    } else {
      mark.dataset.mark = g.next;
      mark.textContent = g.next;
      text.textContent = `${g.next} to move — anyone can play it`;
    }

    const lm = g.lastMove;
    if (lm && lm.by) {
      const who = lm.by === app.identity ? 'you' : lm.by;
      const when = lm.at ? ` at ${timeStr(new Date(lm.at))}` : '';
      const what = lm.mark ? `${lm.mark} on ${cellName(lm.row, lm.col)}` : 'a new game';
      $('last-move').textContent = `Last move: ${what} by ${who}${when}`;
    } else {
      $('last-move').textContent = g.moves ? 'Last move by an unknown player.' : 'No moves yet.';
    }
    $('revision').textContent = app.doc ? String(app.doc.revision) : '–';
    $('renewals').textContent = String(app.tokenRenewals);
  }

  // Step 1: the token, from our own backend (see the Twilio guide). The
  // quickstart's backend hands out a random identity; a renewal presents the
  // still-valid token to prove the identity it keeps (the server only
  // accepts an updated token for the identity the connection was opened
  // with, and /token never mints an identity because a caller names it).
  async function fetchAccessToken(current) {
    const opts = { method: current ? 'POST' : 'GET', cache: 'no-store' };
    if (current) opts.headers = { Authorization: 'Bearer ' + current };
    const res = await fetch('/token', opts);
    if (!res.ok) {
      let body = null;
      try {
        body = await res.json();
      } catch {
        body = null;
      }
      const err = new Error((body && body.message) || `/token answered ${res.status}`);
      err.status = res.status;
      throw err;
    }
    return res.json(); // {identity, token}
  }

  // Step 4: keep the session alive.
  let renewing = null;
  function renewToken(reason) {
    if (renewing) return renewing;
    renewing = (async () => {
      try {
        if (reason === 'expired') {
          // The token no longer proves who we were: join again as someone new.
          log('Token expired; joining again with a new identity', 'warn');
          location.reload();
          return;
        }
        const { identity, token } = await fetchAccessToken(app.token);
        if (identity !== app.identity) {
          throw new Error(`/token issued a token for ${identity}, not ${app.identity}`);
        }
        await app.client.updateToken(token);
        app.token = token;
        scheduleRenewal(token);
        app.tokenRenewals++;
        log(`Token renewed (${reason})`, 'ok');
        render();
      } catch (e) {
        log(`Token renewal failed: ${e.message || e}`, 'error');
      } finally {
        renewing = null;
      }
    })();
    return renewing;
  }

  // The SDK warns 3 minutes before a token expires; a token that lives 3
  // minutes or less is inside that window from the start, where the
  // warning is not to be relied on (the page once waited for tokenExpired
  // and joined again as someone new). Such a token is renewed here, at two
  // thirds of its life, and the SDK's warnings for it are left alone: each
  // renewal would otherwise run twice.
  let renewTimer = null;
  function aboutToExpire() {
    if (renewTimer) return; // a short token: its renewal is scheduled
    renewToken('about to expire');
  }
  function scheduleRenewal(token) {
    clearTimeout(renewTimer);
    renewTimer = null;
    let claims;
    try {
      claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    } catch {
      return; // not ours to read: the SDK's events renew it
    }
    // From the token's own lifetime, not this machine's clock (which may
    // be off by more than the lifetime): it was minted just now.
    const life = (claims.exp - (claims.iat || claims.exp)) * 1000;
    if (!(life > 0) || life > 3 * 60 * 1000) return;
    renewTimer = setTimeout(() => {
      renewTimer = null;
      renewToken('scheduled');
    }, Math.max(1000, life * 2 / 3));
  }

  async function move(row, col) {
    const me = app.identity;
    try {
      await app.doc.mutate((current) => {
        const g = normalize(current);
        if (g.winner || g.board[row][col]) return null; // someone was faster: cancel
        const mark = g.next;
        g.board[row][col] = mark;
        return {
          board: g.board,
          next: mark === 'X' ? 'O' : 'X',
          lastMove: { by: me, mark, row, col, at: new Date().toISOString() },
        };
      });
    } catch (e) {
      log(`Move failed: ${e.message || e}`, 'error');
    }
  }

  async function newGame() {
    try {
      const g = emptyGame();
      await app.doc.set({
        board: g.board,
        next: 'X',
        lastMove: { by: app.identity, mark: null, row: null, col: null, at: new Date().toISOString() },
      });
      log('You started a new game', 'info');
    } catch (e) {
      log(`New game failed: ${e.message || e}`, 'error');
    }
  }

  function describeRemote(data) {
    const lm = normalMove(data && data.lastMove);
    if (!lm || !lm.by) return 'The board changed';
    if (!lm.mark) return `${lm.by} started a new game`;
    return `${lm.by} played ${lm.mark} on ${cellName(lm.row, lm.col)}`;
  }

  async function openDocument() {
    const doc = await app.client.document(DOC_NAME);
    app.doc = doc;
    app.data = doc.data;
    doc.on('updated', (e) => {
      app.data = e.data;
      if (!e.isLocal) log(describeRemote(e.data), 'remote');
      render();
    });
    doc.on('removed', () => {
      log('The document was removed; creating a fresh board', 'error');
      app.ready = false;
      app.doc = null;
      app.data = null;
      render();
      openDocument().catch(fail);
    });
    app.ready = true;
    render();
  }

  function fail(e) {
    app.error = String((e && e.message) || e);
    log(app.error, 'error');
    render();
  }

  async function main() {
    let identity, token;
    try {
      ({ identity, token } = await fetchAccessToken());
    } catch (e) {
      if (e.status === 404) {
        app.tokensOff = true;
        setState('denied');
        throw new Error('This server\'s /token endpoint is off, so the quickstart cannot get an access token. ' +
          'For development, start chorus with --dev-tokens (or CHORUS_DEV_TOKENS=1); ' +
          'in production your own backend mints the tokens (see the README, "Security").');
      }
      throw e;
    }
    app.identity = identity;
    app.token = token;
    scheduleRenewal(token);
    $('identity').textContent = identity;
    $('identity').title = identity;

    // Step 2: point the SDK at this Chorus server.
    const client = new Twilio.Sync.Client(token, {
      cdsUri: location.origin,
      twilsock: {
        uri: (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v3/wsconnect',
      },
      // Reconnect quickly after a server restart (top-level, see SDK notes).
      retryPolicy: { min: 500, max: 5000, randomness: 0.2 },
    });
    app.client = client;
    client.on('connectionStateChanged', (state) => {
      if (state !== app.state) log(`Connection: ${STATE_TEXT[state] || state}`, state === 'connected' ? 'ok' : 'warn');
      setState(state);
    });
    client.on('tokenAboutToExpire', aboutToExpire);
    client.on('tokenExpired', () => renewToken('expired'));
    setState(client.connectionState || 'connecting');

    // Step 3: open (or create) the shared document; this also subscribes.
    await openDocument();
    log(`Joined as ${identity}`, 'ok');
  }

  cells.forEach((btn) => btn.addEventListener('click', () => move(+btn.dataset.row, +btn.dataset.col)));
  $('new-game').addEventListener('click', newGame);
  render();
  main().catch(fail);
})();
