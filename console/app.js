// Aurora console: plain JavaScript, no framework, no build step. Everything a node or a backend
// says is put on the page as text (textContent), never as HTML.
'use strict';
(() => {
  const EVENT_TYPES = [
    'node.joined', 'node.state_changed', 'node.left', 'node.labels_changed', 'node.removed',
    'node.company_changed', 'node.scheduling_changed', 'lead.promoted', 'lead.fenced', 'lead.rejoined',
    'lead.standby_ineligible', 'lead.standby_eligible', 'job.queued', 'job.started', 'job.succeeded',
    'job.failed', 'job.cancelled', 'job.requeued', 'secret.changed', 'replica.state_changed',
    'replica.slot_inactive', 'check.changed', 'check.recovery', 'alert.raised', 'alert.cleared',
    'connectivity.changed',
  ];
  // Which pages an event's type makes stale.
  const REFRESHES = {
    node: ['mesh', 'gpus', 'health', 'secrets'], lead: ['mesh', 'gpus', 'postgres'], job: ['gpus'],
    secret: ['secrets'], replica: ['postgres', 'mesh'], check: ['health', 'mesh'], alert: ['health'],
    connectivity: ['health'],
  };
  // Measurements that change without an event (last seen, lag, handshake age) are sampled this
  // often while their page is open and the tab visible.
  const SAMPLE_MS = 5000;
  const MAX_EVENTS = 500;
  const SIGNED_IN_HINT = 'aurora.signedIn';

  const state = {
    session: null, page: null, source: null, events: [], eventFilter: { type: '', text: '' },
    paused: false, refreshTimer: null, sampleTimer: null, selectedJob: null, followToken: 0,
    lagHistory: new Map(), nodes: [],
  };

  // ---- DOM helpers -------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttributes(el, attrs);
    appendAll(el, children);
    return el;
  }
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    setAttributes(el, attrs);
    appendAll(el, children);
    return el;
  }
  function setAttributes(el, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  function appendAll(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  const $ = (selector) => document.querySelector(selector);
  function fill(id, ...children) {
    const el = document.getElementById(id);
    if (!el) return;
    el.replaceChildren();
    appendAll(el, children);
  }
  function badge(text, tone) { return h('span', { class: 'badge ' + (tone || '') }, text); }
  function tone(stateName) {
    if (['alive', 'ok', 'passing', 'streaming', 'primary', 'succeeded', 'healthy', 'open', 'up'].includes(stateName)) return 'ok';
    if (['suspect', 'away', 'warning', 'catching_up', 'queued', 'assigned', 'running', 'cordoned', 'draining', 'degraded', 'lagging'].includes(stateName)) return 'warn';
    if (['dead', 'critical', 'failed', 'down', 'disconnected', 'stalled', 'unhealthy', 'not_a_replica'].includes(stateName)) return 'bad';
    return 'info';
  }
  function ago(iso) {
    if (!iso) return '—';
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (!isFinite(seconds)) return '—';
    return seconds < 1 ? 'just now' : duration(seconds) + ' ago';
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return '—';
    if (seconds < 60) return (seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)) + ' s';
    if (seconds < 3600) return Math.round(seconds / 60) + ' min';
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + ' h';
    return (seconds / 86400).toFixed(1) + ' d';
  }
  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit === 0 ? value : value.toFixed(1)) + ' ' + units[unit];
  }
  function mb(n) { return n === null || n === undefined ? '—' : (n >= 1024 ? (n / 1024).toFixed(1) + ' GB' : n + ' MB'); }
  function table(columns, rows, attrs) {
    return h('div', { class: 'scroll' }, h('table', attrs || {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, 'none')))));
  }
  function cell(value, col) { return h('td', col ? { dataset: { col } } : {}, value); }

  // ---- API ---------------------------------------------------------------------------------
  class APIError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET' && state.session) headers['X-Aurora-CSRF'] = state.session.csrf;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      const error = (data && data.error) || {};
      if (response.status === 401 && path !== '/ui/session') signedOut('Your session ended. Sign in again.');
      throw new APIError(response.status, error.code || 'http_' + response.status, error.message || response.statusText);
    }
    return data;
  }
  const isAdmin = () => state.session && state.session.role === 'admin';
  const onLead = () => state.session && state.session.agent_role === 'lead';
  function notice(message) {
    const el = $('#notice');
    el.textContent = message || '';
    el.hidden = !message;
  }
  function failure(id, error) { fill(id, h('p', { class: 'error' }, error.message + (error.code ? ' (' + error.code + ')' : ''))); }
  function needsAdmin(id, what) {
    fill(id, h('p', { class: 'muted', dataset: { needs: 'admin' } },
      what + ' needs an admin token (the operator token or an API token with role admin); this session is ' +
      (state.session ? state.session.role : 'signed out') + '.'));
  }

  // ---- Sign in and out ---------------------------------------------------------------------
  async function start() {
    $('#signin-form').addEventListener('submit', signIn);
    $('#signout').addEventListener('click', signOut);
    window.addEventListener('hashchange', route);
    document.addEventListener('visibilitychange', scheduleSampling);
    // The session cookie is HttpOnly: the page cannot see it. A hint in local storage says
    // whether asking for the session is worth a request (an unanswered one is a 401).
    if (localStorage.getItem(SIGNED_IN_HINT) === '1') {
      try {
        state.session = await api('GET', '/ui/session');
      } catch (_) {
        state.session = null;
      }
    }
    if (state.session) enter(); else showSignIn('');
  }
  function showSignIn(message) {
    closeStream();
    clearTimers();
    state.session = null;
    $('#app').hidden = true;
    $('#signin').hidden = false;
    $('#signin-error').textContent = message;
    $('#token').value = '';
    $('#token').focus();
  }
  function signedOut(message) {
    localStorage.removeItem(SIGNED_IN_HINT);
    showSignIn(message);
  }
  async function signIn(event) {
    event.preventDefault();
    const token = $('#token').value.trim();
    if (!token) { $('#signin-error').textContent = 'Paste a token.'; return; }
    $('#signin-button').disabled = true;
    try {
      state.session = await api('POST', '/ui/session', { token });
      $('#token').value = '';
      localStorage.setItem(SIGNED_IN_HINT, '1');
      enter();
    } catch (error) {
      $('#signin-error').textContent = error.status === 401 ? 'This agent does not take that token.' : error.message;
    } finally {
      $('#signin-button').disabled = false;
    }
  }
  async function signOut() {
    try { await api('DELETE', '/ui/session'); } catch (_) { /* the session is gone either way */ }
    signedOut('Signed out.');
  }
  function enter() {
    $('#signin').hidden = true;
    $('#app').hidden = false;
    const s = state.session;
    $('#who').textContent = s.caller + ' (' + s.role + ') on ' + s.agent + ' · ' + s.agent_role;
    document.body.dataset.role = s.role;
    openStream();
    if (!location.hash) location.hash = '#/mesh'; else route();
  }

  // ---- Live stream -------------------------------------------------------------------------
  function openStream() {
    closeStream();
    if (!onLead()) {
      setLive('off', 'live events come from the lead; this agent shows its own view, sampled every ' + SAMPLE_MS / 1000 + ' s');
      return;
    }
    const source = new EventSource('/api/events?tail=100', { withCredentials: true });
    state.source = source;
    source.onopen = () => setLive('on', 'live: following the mesh\'s events');
    source.onerror = () => {
      setLive('off', 'live stream interrupted; reconnecting…');
      // A refused stream (the session ended) is not retried by the browser: ask why.
      if (source.readyState === EventSource.CLOSED) {
        api('GET', '/ui/session').then(
          () => setTimeout(() => { if (state.source === source) openStream(); }, 5000),
          () => signedOut('Your session ended. Sign in again.'));
      }
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, (message) => received(message));
  }
  function closeStream() {
    if (state.source) state.source.close();
    state.source = null;
  }
  function setLive(mode, text) {
    const el = $('#live');
    el.className = 'live ' + mode;
    el.textContent = text;
  }
  function received(message) {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    if (!event || typeof event.type !== 'string') return;
    state.events.push(event);
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    if (state.page === 'events' && !state.paused) renderEvents();
    const pages = REFRESHES[event.type.split('.')[0]] || [];
    if (pages.includes(state.page)) scheduleRefresh();
  }
  function scheduleRefresh() {
    if (state.refreshTimer) return;
    state.refreshTimer = setTimeout(() => { state.refreshTimer = null; refresh(); }, 250);
  }
  function scheduleSampling() {
    if (state.sampleTimer) clearInterval(state.sampleTimer);
    state.sampleTimer = null;
    const sampled = ['mesh', 'postgres'].includes(state.page) || (!onLead() && state.page !== 'events');
    if (state.session && sampled && document.visibilityState === 'visible') {
      state.sampleTimer = setInterval(refresh, SAMPLE_MS);
    }
  }
  function clearTimers() {
    if (state.sampleTimer) clearInterval(state.sampleTimer);
    if (state.refreshTimer) clearTimeout(state.refreshTimer);
    state.sampleTimer = null;
    state.refreshTimer = null;
    state.followToken += 1;
  }

  // ---- Pages -------------------------------------------------------------------------------
  const PAGES = {
    mesh: { title: 'Mesh', build: buildMesh, refresh: refreshMesh },
    gpus: { title: 'GPUs & jobs', build: buildGPUs, refresh: refreshGPUs },
    secrets: { title: 'Secrets', build: buildSecrets, refresh: refreshSecrets },
    postgres: { title: 'PostgreSQL', build: buildPostgres, refresh: refreshPostgres },
    health: { title: 'Health', build: buildHealth, refresh: refreshHealth },
    events: { title: 'Events', build: buildEvents, refresh: renderEvents },
  };
  function route() {
    if (!state.session) return;
    const name = (location.hash.match(/^#\/([a-z]+)/) || [])[1];
    const page = PAGES[name] ? name : 'mesh';
    state.page = page;
    state.followToken += 1;
    for (const link of document.querySelectorAll('#nav a')) {
      if (link.dataset.page === page) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
    }
    document.title = PAGES[page].title + ' · Aurora mesh';
    notice('');
    const main = $('#main');
    main.replaceChildren();
    main.dataset.page = page;
    PAGES[page].build(main);
    main.focus({ preventScroll: true });
    refresh();
    scheduleSampling();
  }
  async function refresh() {
    const page = state.page;
    if (!page || !state.session) return;
    try {
      await PAGES[page].refresh();
      document.getElementById('main').dataset.loaded = String(Date.now());
    } catch (error) {
      if (error instanceof APIError && error.status === 401) return;
      notice('Could not load ' + PAGES[page].title + ': ' + error.message);
    }
  }

  // Mesh ---------------------------------------------------------------------------------------
  function buildMesh(main) {
    appendAll(main, [
      h('h2', {}, 'Mesh'),
      h('p', { id: 'mesh-summary', class: 'muted' }, 'loading…'),
      h('section', { class: 'card', 'aria-labelledby': 'nodes-title' }, h('h3', { id: 'nodes-title' }, 'Nodes'), h('div', { id: 'nodes' })),
      h('section', { class: 'card topology', 'aria-labelledby': 'topology-title' },
        h('h3', { id: 'topology-title' }, 'Topology'),
        h('p', { class: 'muted' }, 'Links are the round trips nodes measure to each other; the label is the RTT and the WireGuard handshake age.'),
        h('div', { id: 'topology' })),
    ]);
  }
  async function loadNodes() {
    const list = await api('GET', '/nodes');
    state.nodes = list.nodes || [];
    const banner = $('#banner');
    if (list.stale) {
      banner.hidden = false;
      banner.textContent = 'The lead is away' + (list.reason ? ' (' + list.reason + ')' : '') + ': this is ' +
        state.session.agent + '\'s cached view' + (list.age_s !== undefined ? ', ' + duration(list.age_s) + ' old' : '') +
        '. It updates when the lead answers again.';
      banner.dataset.stale = 'true';
    } else {
      banner.hidden = true;
      banner.dataset.stale = 'false';
    }
    return list;
  }
  async function refreshMesh() {
    const list = await loadNodes();
    const [topology, gpus] = await Promise.all([
      api('GET', '/topology').catch(() => null),
      api('GET', '/api/gpu/status').catch(() => null),
    ]);
    const running = new Map(((gpus && gpus.nodes) || []).map((n) => [n.name, n.running]));
    const counts = {};
    for (const node of state.nodes) counts[node.state] = (counts[node.state] || 0) + 1;
    fill('mesh-summary', state.nodes.length + ' nodes: ' + Object.entries(counts).map(([k, v]) => v + ' ' + k).join(', ') +
      (list.lead ? ' · lead ' + list.lead : ''));
    document.getElementById('mesh-summary').dataset.count = String(state.nodes.length);
    const rows = state.nodes.map((node) => {
      const caps = node.capabilities || {};
      const gpuList = caps.gpus || [];
      const pg = node.postgres;
      const wg = node.wireguard || {};
      return h('tr', { dataset: { node: node.name } },
        h('th', { scope: 'row' }, node.name),
        cell(badge(node.state, tone(node.state)), 'state'),
        cell(node.role, 'role'), cell(node.company || '—', 'company'), cell(h('span', { class: 'mono' }, node.vpn_ip), 'vpn_ip'),
        cell(ago(node.last_seen), 'last_seen'),
        cell(gpuList.length ? gpuList.length + ' × ' + gpuList[0].name : '—', 'gpus'),
        cell(running.has(node.name) ? String(running.get(node.name)) : '—', 'jobs'),
        cell(pg ? badge(pg.state + (pg.lag_bytes !== undefined ? ' · ' + bytes(pg.lag_bytes) : ''), tone(pg.state)) : '—', 'replica'),
        cell(wg.handshake_age_s !== undefined ? duration(wg.handshake_age_s) : '—', 'handshake'),
        cell(node.version, 'version'));
    });
    fill('nodes', table(['Name', 'State', 'Role', 'Company', 'VPN IP', 'Last seen', 'GPUs', 'Jobs', 'Replica', 'Handshake', 'Version'], rows, { id: 'nodes-table' }));
    if (topology) drawTopology(topology); else fill('topology', h('p', { class: 'muted' }, 'no topology yet'));
  }
  function drawTopology(topology) {
    const nodes = topology.nodes || [];
    if (!nodes.length) { fill('topology', h('p', { class: 'muted' }, 'no nodes')); return; }
    const width = 640, height = 400, cx = width / 2, cy = height / 2, radius = Math.min(cx, cy) - 60;
    const at = new Map(nodes.map((node, i) => {
      const angle = (2 * Math.PI * i) / nodes.length - Math.PI / 2;
      return [node.name, { x: cx + radius * Math.cos(angle), y: cy + radius * Math.sin(angle), node }];
    }));
    // One line per pair: both directions' measurements on one label.
    const pairs = new Map();
    for (const link of topology.links || []) {
      if (!at.has(link.from) || !at.has(link.to)) continue;
      const key = [link.from, link.to].sort().join('\u0000');
      const pair = pairs.get(key) || { a: at.get(link.from), b: at.get(link.to), rtts: [], handshake: undefined };
      pair.rtts.push(link.rtt_ms);
      if (link.handshake_age_s !== undefined) pair.handshake = Math.min(pair.handshake ?? Infinity, link.handshake_age_s);
      pairs.set(key, pair);
    }
    const edges = [...pairs.values()].map((pair) => {
      const rtt = pair.rtts.reduce((a, b) => a + b, 0) / pair.rtts.length;
      const label = rtt.toFixed(1) + ' ms' + (pair.handshake !== undefined ? ' · hs ' + duration(pair.handshake) : '');
      return svg('g', { class: 'link', 'data-link': pair.a.node.name + '~' + pair.b.node.name },
        svg('title', {}, pair.a.node.name + ' ↔ ' + pair.b.node.name + ': ' + label),
        svg('line', { class: 'edge', x1: pair.a.x, y1: pair.a.y, x2: pair.b.x, y2: pair.b.y }),
        svg('text', { class: 'edge-label', x: (pair.a.x + pair.b.x) / 2, y: (pair.a.y + pair.b.y) / 2 - 4, 'text-anchor': 'middle' }, label));
    });
    const colours = { ok: '#2f8a57', warn: '#c98a10', bad: '#c0392b', info: '#3b6ea5' };
    const dots = [...at.values()].map(({ x, y, node }) => svg('g', { class: 'node', 'data-node': node.name },
      svg('title', {}, node.name + ' (' + node.state + ', ' + node.vpn_ip + ')'),
      svg('circle', { cx: x, cy: y, r: 16, fill: colours[tone(node.state)] }),
      svg('text', { x, y: y + 32, 'text-anchor': 'middle' }, node.name),
      svg('text', { x, y: y + 46, 'text-anchor': 'middle', class: 'edge-label' }, node.vpn_ip)));
    fill('topology', svg('svg', { viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': 'Mesh topology: ' + nodes.length + ' nodes, ' + edges.length + ' links' }, edges, dots),
      topology.stale ? h('p', { class: 'muted' }, 'cached topology') : null);
  }

  // GPUs and jobs --------------------------------------------------------------------------------
  function buildGPUs(main) {
    appendAll(main, [
      h('h2', {}, 'GPUs & jobs'),
      h('p', { id: 'gpu-summary', class: 'muted' }, 'loading…'),
      h('div', { id: 'gpu-cards', class: 'grid' }),
      isAdmin() ? submitForm() : null,
      h('section', { class: 'card', 'aria-labelledby': 'queue-title' }, h('h3', { id: 'queue-title' }, 'Queue'), h('div', { id: 'queue' })),
      h('section', { class: 'card', 'aria-labelledby': 'jobs-title' }, h('h3', { id: 'jobs-title' }, 'Jobs'), h('div', { id: 'jobs' })),
      h('section', { class: 'card', id: 'job-detail-card', 'aria-labelledby': 'job-detail-title', hidden: true },
        h('h3', { id: 'job-detail-title' }, 'Job'), h('div', { id: 'job-detail' }), h('pre', { id: 'job-output', class: 'output', 'aria-live': 'polite' })),
    ]);
  }
  function submitForm() {
    const kind = h('select', { id: 'submit-kind', name: 'kind' }, h('option', { value: 'exec' }, 'exec (a command)'), h('option', { value: 'generate' }, 'generate (a model)'));
    const form = h('form', { id: 'submit-form', class: 'inline', onsubmit: submitJob },
      h('div', {}, h('label', { for: 'submit-kind' }, 'Kind'), kind),
      h('div', { class: 'wide', id: 'submit-exec' }, h('label', { for: 'submit-argv' }, 'Command (words separated by spaces, no shell)'),
        h('input', { id: 'submit-argv', name: 'argv', placeholder: 'python train.py --epochs 3', spellcheck: 'false' })),
      h('div', { class: 'wide', id: 'submit-generate', hidden: true },
        h('label', { for: 'submit-model' }, 'Model'), h('input', { id: 'submit-model', name: 'model' }),
        h('label', { for: 'submit-prompt' }, 'Prompt'), h('textarea', { id: 'submit-prompt', name: 'prompt', rows: 3 })),
      h('div', {}, h('label', { for: 'submit-priority' }, 'Priority'),
        h('select', { id: 'submit-priority' }, ['low', 'normal', 'high', 'critical'].map((p) => h('option', { value: p, selected: p === 'normal' }, p)))),
      h('div', {}, h('label', { for: 'submit-vram' }, 'Free VRAM per GPU (MB)'), h('input', { id: 'submit-vram', type: 'number', min: 0, max: 10000000, value: 0 })),
      h('div', {}, h('label', { for: 'submit-gpus' }, 'GPUs'), h('input', { id: 'submit-gpus', type: 'number', min: 1, max: 16, value: 1 })),
      h('div', {}, h('button', { type: 'submit', id: 'submit-button' }, 'Submit job')),
      h('p', { id: 'submit-result', class: 'wide', role: 'status' }));
    kind.addEventListener('change', () => {
      $('#submit-exec').hidden = kind.value !== 'exec';
      $('#submit-generate').hidden = kind.value !== 'generate';
    });
    return h('section', { class: 'card', 'aria-labelledby': 'submit-title' }, h('h3', { id: 'submit-title' }, 'Submit a job'), form);
  }
  async function submitJob(event) {
    event.preventDefault();
    const kind = $('#submit-kind').value;
    const vram = Number($('#submit-vram').value || 0), gpus = Number($('#submit-gpus').value || 1);
    const body = { kind, priority: $('#submit-priority').value, requirements: { min_vram_mb: vram, gpu_count: gpus } };
    if (kind === 'exec') {
      const argv = $('#submit-argv').value.trim().split(/\s+/).filter(Boolean);
      if (!argv.length) { fill('submit-result', h('span', { class: 'error' }, 'Give a command.')); return; }
      body.payload = { argv };
    } else {
      body.payload = { model: $('#submit-model').value.trim(), prompt: $('#submit-prompt').value };
    }
    $('#submit-button').disabled = true;
    try {
      const job = await api('POST', '/api/gpu/jobs', body);
      fill('submit-result', 'Submitted ', h('a', { href: '#/gpus', class: 'mono', 'data-submitted': job.id, onclick: (e) => { e.preventDefault(); selectJob(job.id); } }, job.id),
        ' (' + job.state + ')');
      state.selectedJob = job.id;
      await refreshGPUs();
      selectJob(job.id);
    } catch (error) {
      fill('submit-result', h('span', { class: 'error' }, error.message));
    } finally {
      $('#submit-button').disabled = false;
    }
  }
  async function refreshGPUs() {
    const [status, queue, jobs] = await Promise.all([
      api('GET', '/api/gpu/status'), api('GET', '/api/gpu/queue'), api('GET', '/api/gpu/jobs?limit=50'),
    ]);
    if (state.page !== 'gpus') return;
    const gpuCount = (status.nodes || []).reduce((n, node) => n + (node.gpus || []).length, 0);
    fill('gpu-summary', gpuCount + ' GPUs on ' + (status.nodes || []).length + ' nodes · ' + status.queued + ' queued · placement ' + status.policy);
    fill('gpu-cards', (status.nodes || []).map(gpuCard));
    const queued = queue.queued || [];
    const waiting = await Promise.all(queued.slice(0, 10).map((job) => api('GET', '/api/gpu/jobs/' + encodeURIComponent(job.id)).catch(() => null)));
    fill('queue', table(['#', 'Job', 'Kind', 'Priority', 'ETA', 'Why not running'], queued.map((job, i) => {
      const detail = waiting[i];
      return h('tr', { dataset: { job: job.id } }, cell(String(job.position)), cell(h('span', { class: 'mono' }, job.id.slice(0, 8))),
        cell(job.kind), cell(String(job.priority)), cell(job.eta_s !== undefined ? duration(job.eta_s) : (detail && detail.eta_s !== undefined ? duration(detail.eta_s) : 'unknown')),
        cell(detail && detail.waiting ? detail.waiting.summary : '—', 'waiting'));
    }), { id: 'queue-table' }));
    fill('jobs', table(['Job', 'Kind', 'State', 'Node', 'Priority', 'Attempt', 'Submitted', 'By', ''], (jobs.jobs || []).map(jobRow), { id: 'jobs-table' }));
    if (state.selectedJob) showJob(state.selectedJob, (jobs.jobs || []).find((j) => j.id === state.selectedJob));
  }
  function gpuCard(node) {
    const scheduling = (node.scheduling && node.scheduling.state) || 'open';
    const actions = isAdmin() ? h('div', { class: 'row' },
      ['cordoned', 'draining', 'open'].filter((s) => s !== scheduling).map((target) =>
        h('button', { type: 'button', class: 'quiet', dataset: { action: target, node: node.name }, onclick: () => setScheduling(node.name, target) },
          { cordoned: 'Cordon', draining: 'Drain', open: 'Reopen' }[target]))) : null;
    return h('section', { class: 'card', dataset: { gpuNode: node.name } },
      h('div', { class: 'row' }, h('strong', {}, node.name), badge(node.state, tone(node.state)), badge(scheduling, tone(scheduling)),
        h('span', { class: 'spacer' }), h('span', { class: 'muted' }, node.running + ' running')),
      (node.gpus || []).map((gpu) => {
        const total = gpu.memory_total_mb || 1;
        const used = Math.min(100, (100 * (gpu.memory_used_mb || 0)) / total);
        const reserved = Math.min(100 - used, (100 * (gpu.reserved_mb || 0)) / total);
        return h('div', { dataset: { gpu: gpu.uuid } },
          h('div', {}, '#' + gpu.index + ' ' + gpu.name + (gpu.utilization_pct !== undefined ? ' · ' + gpu.utilization_pct + '% busy' : '')),
          h('div', { class: 'bar', role: 'img', 'aria-label': 'VRAM: ' + mb(gpu.memory_used_mb) + ' used, ' + mb(gpu.reserved_mb) + ' reserved, ' + mb(gpu.free_vram_mb) + ' free of ' + mb(gpu.memory_total_mb) },
            h('span', { class: 'used', style: null, dataset: { pct: used.toFixed(1) } }), h('span', { class: 'reserved', dataset: { pct: reserved.toFixed(1) } })),
          h('div', { class: 'legend' }, mb(gpu.memory_used_mb) + ' used · ' + mb(gpu.reserved_mb) + ' reserved · ', h('span', { dataset: { col: 'free' } }, mb(gpu.free_vram_mb)), ' free of ' + mb(gpu.memory_total_mb)));
      }),
      actions);
  }
  // Bars are sized after insertion (the policy allows no inline style attributes in markup).
  const sizeBars = () => { for (const span of document.querySelectorAll('.bar span')) sizeBar(span); };
  function sizeBar(span) {
    const pct = Number(span.dataset.pct || 0);
    if (span.classList.contains('used')) { span.style.width = pct + '%'; return; }
    const used = Number((span.previousElementSibling && span.previousElementSibling.dataset.pct) || 0);
    span.style.left = used + '%';
    span.style.width = pct + '%';
  }
  new MutationObserver(sizeBars).observe(document.documentElement, { childList: true, subtree: true });
  async function setScheduling(name, target) {
    try {
      await api('PUT', '/nodes/' + encodeURIComponent(name) + '/scheduling', { state: target });
      notice('');
      await refreshGPUs();
    } catch (error) {
      notice(name + ': ' + error.message);
    }
  }
  const FINISHED = ['succeeded', 'failed', 'cancelled'];
  function jobRow(job) {
    const cancellable = isAdmin() && !FINISHED.includes(job.state);
    return h('tr', { dataset: { job: job.id }, class: job.id === state.selectedJob ? 'selected' : null },
      cell(h('a', { href: '#/gpus', class: 'mono', onclick: (e) => { e.preventDefault(); selectJob(job.id); } }, job.id.slice(0, 8))),
      cell(job.kind), cell(badge(job.state, tone(job.state)), 'state'), cell(job.node || '—', 'node'), cell(String(job.priority)),
      cell(job.attempt + '/' + job.max_attempts), cell(ago(job.submitted_at)), cell(job.submitted_by || '—'),
      cell(cancellable ? h('button', { type: 'button', class: 'danger', dataset: { cancel: job.id }, onclick: () => cancelJob(job.id) }, 'Cancel') : ''));
  }
  async function cancelJob(id) {
    try {
      await api('DELETE', '/api/gpu/jobs/' + encodeURIComponent(id));
      notice('');
      await refreshGPUs();
    } catch (error) {
      notice('Cancel ' + id.slice(0, 8) + ': ' + error.message);
    }
  }
  async function selectJob(id) {
    state.selectedJob = id;
    for (const row of document.querySelectorAll('#jobs-table tr[data-job]')) row.classList.toggle('selected', row.dataset.job === id);
    try { showJob(id, await api('GET', '/api/gpu/jobs/' + encodeURIComponent(id))); } catch (error) { notice(error.message); }
  }
  function showJob(id, job) {
    if (!job) return;
    $('#job-detail-card').hidden = false;
    const facts = [['id', job.id], ['state', job.state], ['kind', job.kind], ['node', job.node || '—'], ['attempt', job.attempt + ' of ' + job.max_attempts],
      ['submitted', job.submitted_at], ['started', job.started_at || '—'], ['finished', job.finished_at || '—'],
      ['waiting', job.waiting ? job.waiting.summary : '—'], ['error', job.error || '—']];
    fill('job-detail', h('dl', { class: 'facts', dataset: { job: job.id, state: job.state } },
      facts.map(([k, v]) => [h('dt', {}, k), h('dd', { dataset: { col: k } }, v)])));
    if (job.kind === 'exec' && state.followedJob !== id) followOutput(id);
  }
  // Live output: the lead holds each request until there is more (?wait=), so this is a stream
  // of answers, not a timer.
  async function followOutput(id) {
    state.followedJob = id;
    const token = ++state.followToken;
    const out = $('#job-output');
    out.replaceChildren();
    let offset = 0;
    while (token === state.followToken && state.page === 'gpus') {
      let logs;
      try {
        logs = await api('GET', '/api/gpu/jobs/' + encodeURIComponent(id) + '/logs?offset=' + offset + '&wait=20');
      } catch (error) {
        appendAll(out, [h('span', { class: 'muted' }, '[' + error.message + ']\n')]);
        break;
      }
      if (token !== state.followToken) break;
      for (const chunk of logs.chunks || []) appendAll(out, [h('span', { class: chunk.stream }, chunk.text)]);
      offset = logs.next_offset;
      out.scrollTop = out.scrollHeight;
      if (logs.done) break;
    }
    if (token === state.followToken) state.followedJob = null;
  }

  // Secrets ----------------------------------------------------------------------------------
  function buildSecrets(main) {
    appendAll(main, [
      h('h2', {}, 'Secrets'),
      h('p', { class: 'muted' }, 'Names, scopes and versions. Values are never shown here.'),
      h('section', { class: 'card', 'aria-labelledby': 'audit-title' }, h('h3', { id: 'audit-title' }, 'Audit chain'), h('div', { id: 'audit' })),
      h('section', { class: 'card', 'aria-labelledby': 'secrets-title' }, h('h3', { id: 'secrets-title' }, 'Secrets'), h('div', { id: 'secrets' }), h('div', { id: 'versions' })),
      h('section', { class: 'card', 'aria-labelledby': 'resolution-title' }, h('h3', { id: 'resolution-title' }, 'Who resolves what'),
        h('p', { class: 'muted' }, 'For each node, the scope whose value it reads: node, then company, then global.'), h('div', { id: 'resolution' })),
      h('section', { class: 'card', 'aria-labelledby': 'rotation-title' }, h('h3', { id: 'rotation-title' }, 'Key rotation'),
        h('p', { class: 'muted' }, 'Re-wraps every data key under a new key-encryption key, online; values are not re-encrypted.'),
        isAdmin() && onLead() ? h('button', { type: 'button', id: 'rotate', onclick: rotateKey }, 'Rotate the key-encryption key') : null,
        h('p', { id: 'rotation', role: 'status' })),
    ]);
  }
  async function refreshSecrets() {
    if (!isAdmin()) { needsAdmin('secrets', 'Reading secret names'); fill('audit', ''); fill('resolution', ''); return; }
    if (!onLead()) { fill('secrets', h('p', { class: 'muted' }, 'Secrets are administered on the lead; open its console.')); return; }
    const [list, audit, nodes] = await Promise.all([
      api('GET', '/api/secrets'), api('GET', '/api/audit?verify=true&limit=20'), api('GET', '/nodes'),
    ]);
    if (state.page !== 'secrets') return;
    const verified = audit.verified;
    fill('audit', h('p', {}, badge(verified === false ? 'broken' : 'verified', verified === false ? 'bad' : 'ok'), ' ',
      verified === false ? (audit.problem || 'the chain does not verify') : 'every entry\'s hash covers its fields and the one before'),
    table(['#', 'At', 'Actor', 'Action', 'Secret', 'Scope', 'Version', 'Result'], (audit.entries || []).slice(-20).reverse().map((e) =>
      h('tr', {}, cell(String(e.seq)), cell(ago(e.at)), cell(e.actor), cell(e.action), cell(e.service + '/' + e.key_name), cell(e.scope || '—'),
        cell(e.version !== undefined ? String(e.version) : '—'), cell(badge(e.result, e.result === 'ok' ? 'ok' : 'bad'))))));
    const secrets = list.secrets || [];
    fill('secrets', table(['Service', 'Key', 'Scope', 'Scope id', 'Version', 'Updated', ''], secrets.map((s) =>
      h('tr', { dataset: { secret: [s.service, s.key_name, s.scope, s.scope_id || ''].join('/') } },
        cell(s.service), cell(s.key_name), cell(s.scope, 'scope'), cell(s.scope_id || '—'), cell(String(s.version), 'version'), cell(ago(s.updated_at)),
        cell(h('button', { type: 'button', class: 'quiet', onclick: () => showVersions(s) }, 'Versions')))), { id: 'secrets-table' }));
    const names = [...new Set(secrets.map((s) => s.service + '/' + s.key_name))].sort();
    const rows = (nodes.nodes || []).filter((n) => n.state !== 'left').map((node) =>
      h('tr', { dataset: { node: node.name } }, h('th', { scope: 'row' }, node.name), names.map((name) => {
        const [service, key] = name.split('/');
        const pick = (scope, id) => secrets.find((s) => s.service === service && s.key_name === key && s.scope === scope && (s.scope_id || '') === id);
        const found = pick('node', node.name) || (node.company ? pick('company', node.company) : null) || pick('global', '');
        return cell(found ? found.scope + (found.scope_id ? ':' + found.scope_id : '') + ' v' + found.version : '—', name);
      })));
    fill('resolution', table(['Node'].concat(names), rows, { id: 'resolution-table' }));
  }
  async function showVersions(s) {
    try {
      const answer = await api('GET', '/api/secrets/' + encodeURIComponent(s.service) + '/' + encodeURIComponent(s.key_name) +
        '/versions?scope=' + encodeURIComponent(s.scope) + (s.scope_id ? '&scope_id=' + encodeURIComponent(s.scope_id) : ''));
      fill('versions', h('h3', {}, 'Versions of ' + s.service + '/' + s.key_name + ' (' + s.scope + (s.scope_id ? ':' + s.scope_id : '') + ')'),
        table(['Version', 'Created', 'By', 'Current'], (answer.versions || []).map((v) =>
          h('tr', {}, cell(String(v.version)), cell(v.created_at), cell(v.created_by || '—'), cell(v.current ? 'yes' : '')))));
    } catch (error) {
      failure('versions', error);
    }
  }
  async function rotateKey() {
    $('#rotate').disabled = true;
    fill('rotation', 'rotating…');
    try {
      const r = await api('POST', '/api/secrets/rotate-key');
      fill('rotation', 'Key-encryption key ' + r.from_version + ' → ' + r.to_version + ': ' + r.rewrapped + ' data keys re-wrapped in ' + Number(r.seconds).toFixed(2) + ' s.');
    } catch (error) {
      failure('rotation', error);
    } finally {
      $('#rotate').disabled = false;
    }
  }

  // PostgreSQL -------------------------------------------------------------------------------
  function buildPostgres(main) {
    appendAll(main, [
      h('h2', {}, 'PostgreSQL'),
      h('p', { class: 'muted' }, 'Primary and replicas as the agents watching them report; lag is sampled every ' + SAMPLE_MS / 1000 + ' s while this page is open.'),
      h('section', { class: 'card' }, h('div', { id: 'replicas' })),
    ]);
  }
  async function refreshPostgres() {
    if (!isAdmin()) { needsAdmin('replicas', 'The replica view'); return; }
    const answer = await api('GET', '/api/postgres/replicas');
    if (state.page !== 'postgres') return;
    const now = Date.now();
    const rows = (answer.members || []).map((member) => {
      const local = member.local || {};
      const view = member.primary_view || {};
      const lagBytes = local.lag_bytes ?? view.lag_bytes;
      const lagS = local.lag_s ?? view.replay_lag_s;
      const history = state.lagHistory.get(member.node) || [];
      history.push({ t: now, bytes: lagBytes ?? 0, s: lagS ?? 0 });
      while (history.length > 120) history.shift();
      state.lagHistory.set(member.node, history);
      return h('tr', { dataset: { node: member.node } }, h('th', { scope: 'row' }, member.node),
        cell(member.node === answer.primary ? 'primary' : (local.role || 'replica')), cell(badge(local.state || view.state || 'unknown', tone(local.state || view.state)), 'state'),
        cell(lagBytes !== undefined ? bytes(lagBytes) : '—', 'lag_bytes'), cell(lagS !== undefined ? duration(lagS) : '—', 'lag_s'),
        cell(sparkline(history.map((p) => p.bytes), member.node + ' lag in bytes')), cell(local.reason || '—'));
    });
    fill('replicas', h('p', {}, 'Primary: ', answer.primary ? h('strong', {}, answer.primary) : 'not reported'),
      table(['Node', 'Role', 'State', 'Lag', 'Lag (time)', 'Lag over time', 'Reason'], rows, { id: 'replicas-table' }),
      (answer.unmatched || []).length ? [h('h3', {}, 'Standbys no agent reports'), table(['Application', 'Client', 'State', 'Lag'],
        answer.unmatched.map((s) => h('tr', {}, cell(s.application_name), cell(s.client_addr || '—'), cell(s.state), cell(bytes(s.lag_bytes)))))] : null);
  }
  function sparkline(values, label) {
    const width = 160, height = 28;
    const max = Math.max(1, ...values);
    const points = values.map((v, i) => (values.length === 1 ? width : (i * width) / (values.length - 1)).toFixed(1) + ',' + (height - 2 - ((height - 4) * v) / max).toFixed(1));
    return svg('svg', { class: 'spark', viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': label + ', last ' + values.length + ' samples' },
      svg('polyline', { points: points.join(' ') }));
  }

  // Health -----------------------------------------------------------------------------------
  function buildHealth(main) {
    appendAll(main, [
      h('h2', {}, 'Health'),
      h('section', { class: 'card', 'aria-labelledby': 'alerts-title' }, h('h3', { id: 'alerts-title' }, 'This agent: checks and alerts'), h('div', { id: 'checks' })),
      h('section', { class: 'card', 'aria-labelledby': 'node-checks-title' }, h('h3', { id: 'node-checks-title' }, 'Checks across the mesh'), h('div', { id: 'node-checks' })),
      h('section', { class: 'card', 'aria-labelledby': 'connectivity-title' }, h('h3', { id: 'connectivity-title' }, 'Connectivity'), h('div', { id: 'connectivity' })),
    ]);
  }
  async function refreshHealth() {
    const list = await loadNodes();
    const checkRows = [];
    for (const node of list.nodes || []) for (const check of node.checks || []) {
      checkRows.push(h('tr', { dataset: { node: node.name, check: check.name } }, h('th', { scope: 'row' }, node.name), cell(check.name), cell(badge(check.status, tone(check.status)), 'status'), cell(check.output || '')));
    }
    fill('node-checks', table(['Node', 'Check', 'Status', 'Output'], checkRows, { id: 'node-checks-table' }));
    if (!isAdmin()) { needsAdmin('checks', 'This agent\'s checks'); needsAdmin('connectivity', 'The connectivity matrix'); return; }
    const [checks, health, status] = await Promise.all([
      api('GET', '/api/checks'), api('GET', '/api/connectivity/health').catch((e) => e), api('GET', '/api/connectivity/status').catch((e) => e),
    ]);
    if (state.page !== 'health') return;
    fill('checks', (checks.alerts || []).length ? h('p', {}, (checks.alerts || []).map((a) => badge(a.resource + ' ' + a.value_pct + '% ≥ ' + a.threshold_pct + '%', 'bad'))) : h('p', { class: 'muted' }, 'No resource alerts.'),
      table(['Check', 'Kind', 'Target', 'Status', 'Output', 'Checked'], (checks.checks || []).map((c) =>
        h('tr', {}, cell(c.name), cell(c.kind), cell(c.target || '—'), cell(badge(c.status || 'pending', tone(c.status)), 'status'), cell(c.output || ''), cell(ago(c.checked_at))))));
    if (health instanceof Error || status instanceof Error) { failure('connectivity', health instanceof Error ? health : status); return; }
    const services = [...new Set(Object.values(status.nodes || {}).flatMap((s) => Object.keys(s)))].sort();
    const matrix = Object.keys(status.nodes || {}).sort().map((node) => h('tr', { dataset: { node } }, h('th', { scope: 'row' }, node),
      services.map((service) => { const r = (status.nodes[node] || {})[service]; return cell(r ? badge(r.state + (r.latency_ms !== undefined ? ' · ' + Math.round(r.latency_ms) + ' ms' : ''), tone(r.state)) : '—', service); })));
    fill('connectivity', h('p', {}, 'Mesh: ', badge(health.state, tone(health.state))),
      services.length ? table(['Node'].concat(services), matrix, { id: 'connectivity-table' }) : h('p', { class: 'muted' }, 'No node probes external services (profile key connectivity).'));
  }

  // Events -----------------------------------------------------------------------------------
  function buildEvents(main) {
    const typeSelect = h('select', { id: 'event-type', 'aria-label': 'Event kind' }, h('option', { value: '' }, 'all kinds'),
      [...new Set(EVENT_TYPES.map((t) => t.split('.')[0]))].map((p) => h('option', { value: p + '.' }, p + '.*')));
    typeSelect.value = state.eventFilter.type;
    const text = h('input', { id: 'event-text', type: 'search', placeholder: 'filter: node, job id, text', 'aria-label': 'Filter events', value: state.eventFilter.text });
    const pause = h('button', { type: 'button', id: 'event-pause', class: 'quiet', 'aria-pressed': String(state.paused) }, state.paused ? 'Resume' : 'Pause');
    typeSelect.addEventListener('change', () => { state.eventFilter.type = typeSelect.value; renderEvents(); });
    text.addEventListener('input', () => { state.eventFilter.text = text.value; renderEvents(); });
    pause.addEventListener('click', () => {
      state.paused = !state.paused;
      pause.textContent = state.paused ? 'Resume' : 'Pause';
      pause.setAttribute('aria-pressed', String(state.paused));
      if (!state.paused) renderEvents();
    });
    appendAll(main, [
      h('h2', {}, 'Events'),
      h('div', { class: 'row card' }, typeSelect, text, pause, h('span', { class: 'spacer' }), h('span', { id: 'event-count', class: 'muted' })),
      onLead() ? h('ul', { id: 'events-list', class: 'events card', 'aria-live': 'polite' })
        : h('p', { class: 'card muted' }, 'The event stream is the lead\'s: open the lead\'s console to follow it.'),
    ]);
  }
  function renderEvents() {
    const list = document.getElementById('events-list');
    if (!list) return;
    const { type, text } = state.eventFilter;
    const needle = text.trim().toLowerCase();
    const shown = state.events.filter((e) => (!type || e.type.startsWith(type)) &&
      (!needle || JSON.stringify(e).toLowerCase().includes(needle))).slice(-200).reverse();
    list.replaceChildren(...shown.map((e) => h('li', { dataset: { seq: String(e.seq), type: e.type } },
      h('span', { class: 'mono muted' }, '#' + e.seq), badge(e.type, tone(e.type.split('.')[1])), h('span', {}, (e.node ? e.node + ' · ' : '') + new Date(e.at).toLocaleTimeString()),
      h('span', { class: 'data mono' }, JSON.stringify(e.data)))));
    fill('event-count', shown.length + ' of ' + state.events.length + ' events');
  }

  start();
})();
