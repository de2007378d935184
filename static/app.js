// stepkto dashboard: a plain ES module over the service's JSON endpoints (all of them in
// /openapi.json, so whatever this page shows can also be scripted). Every view's state
// lives in the URL hash, so each view is a permalink. Text from the database is only ever
// set as textContent, never parsed as HTML.

const $ = (sel, el = document) => el.querySelector(sel);
const view = () => document.getElementById('view');
const PAGE = 50;

// ---------- small helpers ----------
function h(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat(Infinity)) if (k != null) e.append(k instanceof Node ? k : String(k));
  return e;
}
const pct = (x, d = 1) => (x == null ? '—' : (100 * x).toFixed(d) + '%');
const num = (x, d = 3) => (x == null ? '—' : Number(x).toFixed(d));

// A verdict is a glyph and a word, with the colour as a third cue, never the only one.
const CLASSES = {
  correct: ['✓', 'correct', 'v-ok'],
  flawed: ['⚠', 'flawed', 'v-flaw'],
  wrong: ['✗', 'wrong', 'v-bad'],
  unknown: ['?', 'unknown', 'v-unk'],
};
function verdict(kind, label) {
  const [g, word, cls] = CLASSES[kind] || CLASSES.unknown;
  return h('span', { class: 'verdict ' + cls, 'data-verdict': kind }, `${g} ${label || word}`);
}
function stepLabel(c) {
  if (c === true) return verdict('correct', 'right');
  if (c === false) return verdict('wrong', 'wrong');
  return verdict('unknown', 'unjudged');
}
function symbolicLabel(s) {
  if (s === 'verified') return verdict('correct', 'verified');
  if (s === 'refuted') return verdict('wrong', 'refuted');
  return verdict('unknown', s ? 'unknown' : 'not checked');
}

// ---------- theme ----------
function applyTheme(t) {
  document.documentElement.dataset.theme = t;
  const b = $('#theme');
  b.textContent = t === 'dark' ? '☾ Dark theme' : '☀ Light theme';
  b.setAttribute('aria-pressed', t === 'dark' ? 'true' : 'false');
}
let theme = localStorage.getItem('stepkto-theme')
  || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
applyTheme(theme);
$('#theme').addEventListener('click', () => {
  theme = theme === 'dark' ? 'light' : 'dark';
  localStorage.setItem('stepkto-theme', theme);
  applyTheme(theme);
  route(); // charts take their colours from the theme
});

// ---------- the API ----------
const keyInput = $('#api-key');
keyInput.value = localStorage.getItem('stepkto-key') || '';
keyInput.addEventListener('change', () => {
  localStorage.setItem('stepkto-key', keyInput.value.trim());
  route();
});
async function api(path) {
  const key = localStorage.getItem('stepkto-key');
  const r = await fetch(path, { headers: key ? { Authorization: 'Bearer ' + key } : {} });
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  if (r.status === 401 || r.status === 403) $('#key-box').hidden = false;
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}
function showError(el, e) {
  el.append(h('p', { class: 'error', role: 'alert' }, 'Could not load: ' + e.message));
}
function loading(el) {
  const p = h('p', { class: 'status', id: 'loading' }, 'Loading…');
  el.append(p);
  return () => p.remove();
}

// ---------- routing ----------
function parseHash() {
  const raw = location.hash.slice(1) || '/';
  const [path, qs] = raw.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), q: new URLSearchParams(qs || '') };
}
// Keep a view's state in the URL without reloading it.
function setQuery(q) {
  const { parts } = parseHash();
  const s = q.toString();
  history.replaceState(null, '', '#/' + parts.map(encodeURIComponent).join('/') + (s ? '?' + s : ''));
}
let cleanup = () => {};
let keyHandler = null;
function route() {
  cleanup();
  cleanup = () => {};
  keyHandler = null;
  const { parts, q } = parseHash();
  for (const a of document.querySelectorAll('header nav a')) a.classList.remove('active');
  // each visit draws into its own container: a slower earlier visit that finishes late
  // draws into a detached one, never beside the current view
  const el = h('div', { class: 'page' });
  view().replaceChildren(el);
  if (parts[0] === 'runs') { $('#nav-runs').classList.add('active'); return runs(el); }
  if (parts[0] === 'run' && parts[1]) { $('#nav-runs').classList.add('active'); return run(el, parts[1], q); }
  if (parts[0] === 'record' && parts[1]) { $('#nav-overview').classList.add('active'); return record(el, parts[1], q); }
  $('#nav-overview').classList.add('active');
  return overview(el, q);
}
window.addEventListener('hashchange', route);
document.addEventListener('keydown', (e) => {
  if (keyHandler && !['INPUT', 'SELECT', 'TEXTAREA'].includes(e.target.tagName)) keyHandler(e);
});

// ---------- overview ----------
const COLUMNS = [
  ['model', 'Model'], ['round', 'Round'], ['dataset', 'Dataset'], ['kind', 'Kind'],
  ['flawed_rate', 'Flawed-step rate [95% CI]'], ['n', 'n (right answers)'],
  ['pass_at_1', 'Pass@1'], ['maj_at_k', 'Maj@k'], ['f1', 'ProcessBench F1'],
];
function emptyState(el) {
  el.append(
    h('p', {}, 'No eval records yet. Every finished round of a training job records one; or record a run yourself:'),
    h('pre', { class: 'cmd' },
      'stepkto eval processbench --input processbench.jsonl --record\n' +
      'stepkto eval generate --model DIR --input math500.jsonl --judge symbolic --record\n' +
      "curl -X POST localhost:8080/v1/evals -d '{\"model\": \"m\", \"dataset\": \"math500\", \"kind\": \"generate\", \"samples\": [...]}'"),
  );
}
async function overview(el, q) {
  el.append(h('h1', {}, 'Overview'));
  const done = loading(el);
  let data;
  try { data = await api('/v1/overview'); } catch (e) { done(); return showError(el, e); }
  done();
  if (!el.isConnected) return; // a newer view has replaced this one
  if (!data.rows.length) return emptyState(el);
  const filter = h('input', { type: 'search', id: 'filter', placeholder: 'filter model or dataset', value: q.get('filter') || '' });
  const kinds = [...new Set(data.rows.map((r) => r.kind))];
  const kindSel = h('select', { id: 'kind' }, h('option', { value: '' }, 'every kind'), kinds.map((k) => h('option', { value: k }, k)));
  kindSel.value = q.get('kind') || '';
  const table = h('table', { id: 'overview' });
  const cmpBox = h('div', { id: 'compare' });
  el.append(h('div', { class: 'toolbar' }, filter, kindSel,
    h('span', { class: 'status' }, `${data.rows.length} rows; tick two to compare; rates greyed when n < ${data.small_n_below}`)),
  table, cmpBox);
  if (data.truncated) el.append(h('p', { class: 'status' }, 'Only the newest 20,000 records are shown.'));

  const draw = () => {
    const sort = q.get('sort') || 'model';
    const dir = q.get('dir') === 'desc' ? -1 : 1;
    const f = (q.get('filter') || '').toLowerCase();
    const kind = q.get('kind') || '';
    const cmp = (q.get('cmp') || '').split(',').filter(Boolean);
    let rows = data.rows.filter((r) => (!kind || r.kind === kind)
      && (!f || r.model.toLowerCase().includes(f) || r.dataset.toLowerCase().includes(f)));
    rows = rows.slice().sort((a, b) => {
      const x = a[sort], y = b[sort];
      if (x == null && y == null) return 0;
      if (x == null) return 1;
      if (y == null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    const head = h('tr', {}, COLUMNS.map(([k, label]) => h('th', {
      'data-col': k, 'aria-sort': k === sort ? (dir > 0 ? 'ascending' : 'descending') : null,
      onclick: () => { q.set('sort', k); q.set('dir', k === sort && dir > 0 ? 'desc' : 'asc'); setQuery(q); draw(); },
    }, label)), h('th', {}, 'Compare'));
    const body = rows.map((r) => h('tr', { class: r.small_n ? 'small' : null, 'data-record': r.record_id },
      h('td', {}, r.model), h('td', { class: 'num' }, r.round ?? '—'), h('td', {}, r.dataset), h('td', {}, r.kind),
      h('td', { class: 'num rate' },
        r.flawed_rate == null ? '—' : h('a', { href: `#/record/${encodeURIComponent(r.record_id)}?filter=flawed`, class: 'rate-link' }, pct(r.flawed_rate)),
        r.ci_low == null ? '' : h('span', { class: 'ci' }, ` [${pct(r.ci_low)}, ${pct(r.ci_high)}]`)),
      h('td', { class: 'num' }, h('a', { href: `#/record/${encodeURIComponent(r.record_id)}` }, `${r.n}`), ` (${r.flawed} flawed)`),
      h('td', { class: 'num' }, pct(r.pass_at_1)),
      h('td', { class: 'num' }, r.maj_at_k == null ? '—' : `${pct(r.maj_at_k)} (k=${r.k ?? '?'})`),
      h('td', { class: 'num' }, pct(r.f1)),
      h('td', {}, h('input', { type: 'checkbox', 'aria-label': 'compare ' + r.record_id, checked: cmp.includes(r.record_id),
        onchange: (e) => {
          let c = (q.get('cmp') || '').split(',').filter(Boolean).filter((x) => x !== r.record_id);
          if (e.target.checked) c = [...c, r.record_id].slice(-2);
          if (c.length) q.set('cmp', c.join(',')); else q.delete('cmp');
          setQuery(q); draw();
        } }))));
    table.replaceChildren(h('thead', {}, head), h('tbody', {}, body));
    drawCompare(cmpBox, cmp);
  };
  filter.addEventListener('input', () => { if (filter.value) q.set('filter', filter.value); else q.delete('filter'); setQuery(q); draw(); });
  kindSel.addEventListener('change', () => { if (kindSel.value) q.set('kind', kindSel.value); else q.delete('kind'); setQuery(q); draw(); });
  draw();
}
async function drawCompare(box, cmp) {
  box.replaceChildren();
  box.dataset.want = '';
  if (cmp.length !== 2) return;
  box.className = 'compare';
  const want = cmp.join(',');
  box.dataset.want = want;
  try {
    const c = await api(`/v1/overview/compare?a=${encodeURIComponent(cmp[0])}&b=${encodeURIComponent(cmp[1])}`);
    if (box.dataset.want !== want) return; // the selection changed while this was asked
    const name = (r) => `${r.model} r${r.round ?? '—'} on ${r.dataset}`;
    const d = c.flawed_rate_difference;
    box.append(
      h('strong', {}, `${name(c.b)} minus ${name(c.a)}: `),
      h('span', { id: 'cmp-diff' }, d == null ? 'no rate to compare' : `${d >= 0 ? '+' : ''}${(100 * d).toFixed(1)} points flawed-step rate`),
      c.pass_at_1_difference == null ? '' : `, ${c.pass_at_1_difference >= 0 ? '+' : ''}${(100 * c.pass_at_1_difference).toFixed(1)} points Pass@1. `,
      h('span', { id: 'cmp-overlap' }, c.intervals_overlap == null ? ''
        : c.intervals_overlap ? 'The 95% intervals overlap: the difference may be noise.'
          : 'The 95% intervals do not overlap.'));
  } catch (e) { showError(box, e); }
}

// ---------- training runs ----------
const STATE = {
  queued: ['unknown', '◷ queued'], running: ['flawed', '▶ running'], succeeded: ['correct', '✓ succeeded'],
  failed: ['wrong', '✗ failed'], cancelled: ['unknown', '■ cancelled'],
};
function stateLabel(s) {
  const [k, label] = STATE[s] || ['unknown', s];
  const [, , cls] = CLASSES[k];
  return h('span', { class: 'verdict ' + cls, 'data-state': s }, label);
}
function runs(el) {
  el.append(h('h1', {}, 'Training runs'));
  const table = h('table', { id: 'runs' });
  const note = h('p', { class: 'status', id: 'live' }, 'Connecting…');
  el.append(note, table);
  const draw = (jobs) => {
    if (!jobs.length) {
      table.replaceChildren();
      note.textContent = 'No training jobs yet: POST /v1/train starts one (see the README).';
      return;
    }
    table.replaceChildren(h('thead', {}, h('tr', {}, ['Job', 'Method', 'State', 'Phase', 'Round', 'Step', 'Tokens/s', 'ETA'].map((t) => h('th', {}, t)))),
      h('tbody', {}, jobs.map((j) => {
        const p = j.progress || {};
        return h('tr', { 'data-job': j.id },
          h('td', {}, h('a', { href: `#/run/${encodeURIComponent(j.id)}` }, j.id)), h('td', {}, j.method),
          h('td', {}, stateLabel(j.state), j.error ? h('div', { class: 'claim' }, j.error) : ''),
          h('td', {}, p.phase || '—'), h('td', { class: 'num' }, p.round != null ? `${p.round} / ${p.rounds ?? '?'}` : '—'),
          h('td', { class: 'num' }, p.global_step ?? '—'), h('td', { class: 'num' }, p.tokens_per_s ? Math.round(p.tokens_per_s) : '—'),
          h('td', { class: 'num' }, p.eta_seconds != null && j.state === 'running' ? `${Math.round(p.eta_seconds)} s` : '—'));
      })));
  };
  // EventSource cannot send an Authorization header: with a key, poll instead.
  if (localStorage.getItem('stepkto-key')) {
    const tick = async () => {
      try { draw(await api('/v1/train?limit=200')); note.textContent = 'Updated every 2 s.'; } catch (e) { note.textContent = 'Could not load: ' + e.message; }
    };
    tick();
    const t = setInterval(tick, 2000);
    cleanup = () => clearInterval(t);
    return;
  }
  const es = new EventSource('/v1/train/events');
  es.addEventListener('jobs', (e) => { note.textContent = 'Live (server-sent events).'; draw(JSON.parse(e.data)); });
  es.onerror = () => { note.textContent = 'Live updates interrupted; reconnecting…'; };
  cleanup = () => es.close();
}

// ---------- one run: curves and rounds ----------
const DEFAULT_KEYS = ['loss', 'kl', 'rewards/margins', 'step_term'];
function ema(values, a) {
  let s = null;
  return values.map((v) => {
    if (v == null) return s;
    s = s == null ? v : a * s + (1 - a) * v;
    return s;
  });
}
function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
async function run(el, id, q) {
  el.append(h('h1', {}, 'Run ', h('code', {}, id)));
  const done = loading(el);
  let job, curves, rounds;
  try {
    [job, curves, rounds] = await Promise.all([
      api(`/v1/train/${encodeURIComponent(id)}`),
      api(`/v1/train/${encodeURIComponent(id)}/curves?points=1000`),
      api(`/v1/overview?job=${encodeURIComponent(id)}`),
    ]);
  } catch (e) { done(); return showError(el, e); }
  done();
  if (!el.isConnected) return;
  const p = job.progress || {};
  el.append(h('p', {}, stateLabel(job.state), ` ${job.method}, round ${p.round ?? '—'} of ${p.rounds ?? '?'}, step ${p.global_step ?? '—'}`,
    job.error ? h('div', { class: 'error' }, job.error) : ''));

  // Pass@1 and flawed-step rate per round, each linked to its solutions
  el.append(h('h2', {}, 'Rounds'));
  if (!rounds.rows.length) el.append(h('p', { class: 'status' }, 'No evaluated round yet (the job config needs eval_problems).'));
  else {
    const rs = rounds.rows.slice().sort((a, b) => (a.round ?? 0) - (b.round ?? 0));
    el.append(h('table', { id: 'rounds' }, h('thead', {}, h('tr', {}, ['Round', 'Pass@1', 'Flawed-step rate [95% CI]', 'n', 'Solutions'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rs.map((r) => h('tr', { class: r.small_n ? 'small' : null, 'data-round': r.round },
        h('td', { class: 'num' }, `M${r.round}`), h('td', { class: 'num' }, pct(r.pass_at_1)),
        h('td', { class: 'num rate' }, pct(r.flawed_rate), r.ci_low == null ? '' : h('span', { class: 'ci' }, ` [${pct(r.ci_low)}, ${pct(r.ci_high)}]`)),
        h('td', { class: 'num' }, r.n),
        h('td', {}, ['flawed', 'wrong', 'correct'].map((f) => [h('a', { href: `#/record/${encodeURIComponent(r.record_id)}?filter=${f}` }, f), ' '])))))));
  }

  el.append(h('h2', {}, 'Curves'));
  if (!curves.total_steps) { el.append(h('p', { class: 'status' }, 'No optimiser step logged yet.')); return; }
  const chosen = (q.get('keys') || DEFAULT_KEYS.filter((k) => curves.keys.includes(k)).join(',') || curves.keys.slice(0, 4).join(','))
    .split(',').filter((k) => curves.keys.includes(k));
  const a = Number(q.get('ema') ?? '0.6');
  const logScale = q.get('log') === '1';
  const slider = h('input', { type: 'range', id: 'ema', min: '0', max: '0.99', step: '0.01', value: String(a) });
  const log = h('input', { type: 'checkbox', id: 'log', checked: logScale });
  const keySel = h('select', { id: 'keys', multiple: true, size: Math.min(6, curves.keys.length) },
    curves.keys.map((k) => h('option', { value: k, selected: chosen.includes(k) }, k)));
  const csv = h('button', { type: 'button', id: 'csv' }, 'Export CSV');
  el.append(h('div', { class: 'toolbar' },
    h('label', {}, 'Smoothing (EMA) ', slider, h('span', { id: 'ema-value' }, a.toFixed(2))),
    h('label', {}, log, ' log scale'), h('label', {}, 'Metrics ', keySel), csv,
    h('span', { class: 'status' }, `${curves.total_steps} steps` + (curves.bucket > 1 ? `, ${curves.bucket} per point (mean)` : '') + '; drag to zoom, double-click to reset')));
  const charts = h('div', { class: 'charts', id: 'charts' });
  el.append(charts);
  slider.addEventListener('change', () => { q.set('ema', slider.value); setQuery(q); route(); });
  slider.addEventListener('input', () => { $('#ema-value').textContent = Number(slider.value).toFixed(2); });
  log.addEventListener('change', () => { if (log.checked) q.set('log', '1'); else q.delete('log'); setQuery(q); route(); });
  keySel.addEventListener('change', () => { q.set('keys', [...keySel.selectedOptions].map((o) => o.value).join(',')); setQuery(q); route(); });
  const plotted = {};
  const plots = [];
  for (const k of chosen) {
    const raw = curves.series[k].mean;
    const smooth = ema(raw, a);
    plotted[k] = { raw, smooth };
    const positive = raw.every((v) => v == null || v > 0);
    const box = h('div', { class: 'chart', 'data-key': k }, h('h3', {}, k + (logScale && !positive ? ' (linear: has values ≤ 0)' : '')));
    charts.append(box);
    const fg = cssVar('--fg'), line = cssVar('--line'), accent = cssVar('--link');
    const axis = { stroke: fg, grid: { stroke: line }, ticks: { stroke: line } };
    const u = new window.uPlot({
      width: Math.max(480, Math.min(680, charts.clientWidth / 2 - 20)), height: 260,
      scales: { x: { time: false }, y: logScale && positive ? { distr: 3 } : {} },
      axes: [{ ...axis, label: 'step' }, axis],
      legend: { live: true },
      series: [{ label: 'step' },
        { label: 'raw', stroke: accent, width: 1, alpha: 0.25 },
        { label: `EMA ${a.toFixed(2)}`, stroke: accent, width: 2 }],
    }, [curves.steps, raw, smooth], box);
    plots.push(u);
  }
  csv.addEventListener('click', () => {
    const head = ['step', 'round', ...chosen.flatMap((k) => [k, `${k} (ema ${a})`])];
    const lines = [head.join(',')];
    curves.steps.forEach((s, i) => {
      lines.push([s, curves.rounds[i], ...chosen.flatMap((k) => [plotted[k].raw[i] ?? '', plotted[k].smooth[i] ?? ''])].join(','));
    });
    const url = URL.createObjectURL(new Blob([lines.join('\n') + '\n'], { type: 'text/csv' }));
    const link = h('a', { href: url, download: `${id}-curves.csv` });
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  cleanup = () => plots.forEach((u) => u.destroy());
}

// ---------- drill-down: one record's solutions, one at a time ----------
async function record(el, id, q) {
  const filter = q.get('filter') || '';
  const i = Math.max(0, Number(q.get('i') || 0));
  const done = loading(el);
  let rec, page;
  const offset = Math.floor(i / PAGE) * PAGE;
  try {
    [rec, page] = await Promise.all([
      api(`/v1/evals/${encodeURIComponent(id)}`),
      api(`/v1/evals/${encodeURIComponent(id)}/samples?limit=${PAGE}&offset=${offset}` + (filter ? `&filter=${filter}` : '')),
    ]);
  } catch (e) { done(); return showError(el, e); }
  done();
  if (!el.isConnected) return;
  el.append(h('h1', {}, `${rec.model} ${rec.round != null ? 'round ' + rec.round : ''} on ${rec.dataset}`),
    h('p', { class: 'status' }, `${rec.kind} record ${rec.id}` + (rec.job_id ? ` from job ` : ''), rec.job_id ? h('a', { href: `#/run/${encodeURIComponent(rec.job_id)}` }, rec.job_id) : ''));
  const cls = rec.classes || {};
  const all = Object.values(cls).reduce((x, y) => x + y, 0);
  const tab = (f, label, n) => h('a', { href: `#/record/${encodeURIComponent(id)}` + (f ? `?filter=${f}` : ''), class: f === filter ? 'active' : null, 'data-filter': f || 'all' }, `${label} (${n})`);
  el.append(h('div', { class: 'tabs', id: 'tabs' }, tab('', 'all', all), ['flawed', 'wrong', 'correct', 'unknown'].map((f) => tab(f, CLASSES[f][0] + ' ' + f, cls[f] ?? 0))));
  if (!page.total) { el.append(h('p', { class: 'status' }, 'No solution in this class.')); return; }
  // a permalink past the end (the class has shrunk, or a hand-made URL) shows the last one
  if (!page.samples.length) { q.set('i', String(page.total - 1)); setQuery(q); return route(); }
  const at = Math.min(i, page.total - 1);
  const go = (j) => { q.set('i', String(j)); setQuery(q); route(); };
  const list = h('ol', { class: 'samples', start: String(offset + 1) }, page.samples.map((s, k) => h('li', { class: offset + k === at ? 'current' : null },
    h('a', { href: '#', onclick: (e) => { e.preventDefault(); go(offset + k); } }, String(s.sample.id ?? s.index)), ' ', verdict(s.class))));
  const cur = page.samples[at - offset];
  const detail = h('div', { id: 'sample', 'data-index': cur.index });
  const nav = h('div', { class: 'toolbar' },
    h('button', { type: 'button', id: 'prev', disabled: at === 0, onclick: () => go(at - 1) }, '← previous'),
    h('span', {}, `${at + 1} of ${page.total}`),
    h('button', { type: 'button', id: 'next', disabled: at + 1 >= page.total, onclick: () => go(at + 1) }, 'next →'),
    h('span', { class: 'status' }, h('kbd', {}, 'j'), ' next, ', h('kbd', {}, 'k'), ' previous'));
  keyHandler = (e) => {
    if (e.key === 'j' && at + 1 < page.total) go(at + 1);
    if (e.key === 'k' && at > 0) go(at - 1);
  };
  const s = cur.sample || {};
  const outcome = s.final_answer_correct === true ? verdict('correct', 'right final answer')
    : s.final_answer_correct === false ? verdict('wrong', 'wrong final answer') : verdict('unknown', 'answer not judged');
  detail.append(
    h('h2', {}, `Solution ${s.id ?? cur.index} `, verdict(cur.class)),
    h('div', { class: 'problem', id: 'problem' }, s.problem || '(no problem text recorded)'),
    h('p', {}, 'Outcome: ', outcome, s.extracted != null ? ` extracted answer ${s.extracted}` : '', s.answer != null ? `, reference ${s.answer}` : ''),
    h('div', { id: 'steps' }, (s.steps || []).map((st, k) => h('div', { class: 'step', 'data-step': k, 'data-correct': String(st.correct ?? null) },
      h('div', { class: 'idx' }, `#${k}`),
      h('div', {}, stepLabel(st.correct),
        st.score != null ? h('div', { class: 'strip', title: `PRM P(correct) ${num(st.score)}` }, h('span', { style: null, 'data-score': st.score })) : '',
        st.score != null ? h('div', { class: 'status' }, `PRM ${num(st.score)}`) : ''),
      h('div', {}, h('div', { class: 'steptext' }, st.text ?? ''),
        h('div', {}, 'symbolic: ', symbolicLabel(st.symbolic)),
        st.detail ? h('div', { class: 'claim' }, 'false claim: ', st.detail) : '')))),
  );
  // strip widths are set through the CSSOM (the Content-Security-Policy forbids style attributes)
  for (const sp of detail.querySelectorAll('.strip > span')) sp.style.width = `${100 * Number(sp.dataset.score)}%`;
  el.append(nav, h('div', { class: 'cols' }, list, detail));
}

route();
