// flagship's web UI: one ES module, no framework, no build step, no request to any other host.
// It speaks only the management API (/v1) and OFREP of the server that served it, with the
// admin token kept in sessionStorage (never in a URL). Views are chosen by the URL's hash:
//   #/                      environments
//   #/e/ENV                 flags (search, toggles) and segments of ENV
//   #/e/ENV/new             a new flag          #/e/ENV/f/KEY[/TAB]   a flag (edit, json, history, explain, copy)
//   #/e/ENV/new-segment     a new segment       #/e/ENV/s/KEY         a segment
//   #/e/ENV/audit           the environment's audit log
//   #/e/ENV/export          the environment as one document     #/e/ENV/import   import one, diff first
//   #/e/ENV/copy            copy flags from another environment, diff first

const TOKEN_KEY = 'flagship.adminToken';
const OPERATORS = [
  'equals', 'not_equals', 'in', 'not_in', 'starts_with', 'ends_with', 'contains',
  'gt', 'gte', 'lt', 'lte', 'exists', 'matches',
  'semver_eq', 'semver_ne', 'semver_lt', 'semver_lte', 'semver_gt', 'semver_gte', 'semver_caret', 'semver_tilde',
  'in_segment', 'not_in_segment',
];
const SERVER_FIELDS = ['key', 'version', 'updatedAt'];

// ----- DOM -----------------------------------------------------------------------------------

/** An element: `h('button', {class: 'primary', onclick: f}, 'Save')`. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'text') element.textContent = value;
    else if (name === 'value') element.value = value;
    else if (name === 'checked') element.checked = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const main = () => document.getElementById('main');

/** The nodes of `items` that are there (views build lists with `cond ? node : null`). */
const present = (items) => items.flat().filter((item) => item !== null && item !== undefined && item !== false);

function show(...nodes) {
  main().replaceChildren(...present(nodes));
}

let noticeShownAt = 0;

function notice(text, kind = 'ok') {
  noticeShownAt = Date.now();
  const area = document.getElementById('notice');
  area.replaceChildren(text ? h('div', { class: `banner ${kind}` }, text) : '');
}

function crumbs(...parts) {
  const nav = document.getElementById('crumbs');
  nav.replaceChildren(...present(parts.map((part, index) => [
    index ? h('span', { class: 'muted', 'aria-hidden': 'true' }, '/') : null,
    part.href ? h('a', { href: part.href }, part.text) : h('span', {}, part.text),
  ])));
}

const pretty = (value) => JSON.stringify(value, null, 2);
const plural = (count, noun) => `${count} ${noun}${count === 1 ? '' : 's'}`;
const enc = encodeURIComponent;

// ----- the API ---------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Calls the server; answers `{status, body, etag}` (body parsed when JSON). */
async function call(method, path, { body, headers = {}, auth = true, signingIn = false } = {}) {
  const sent = { method, headers: { ...headers } };
  if (auth) sent.headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) {
    sent.headers['Content-Type'] = sent.headers['Content-Type'] ?? 'application/json';
    sent.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let response;
  let text;
  try {
    response = await fetch(path, sent);
    text = await response.text();
  } catch (error) {
    return { status: 0, body: { error: { code: 'unavailable', message: `the server cannot be reached (${error.message})` } }, etag: null };
  }
  let parsed = text;
  try { parsed = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (response.status === 401 && auth && !signingIn) {
    // The token stopped working (rotated, or the server restarted with another): sign in again.
    sessionStorage.removeItem(TOKEN_KEY);
    route();
  }
  return { status: response.status, body: parsed, etag: response.headers.get('ETag') };
}

function errorText(answer) {
  const error = answer.body && answer.body.error;
  return error ? `${error.message} (${error.code})` : `HTTP ${answer.status}`;
}

// ----- sign in ---------------------------------------------------------------------------------

function signIn(message) {
  crumbs();
  document.getElementById('sign-out').hidden = true;
  document.getElementById('who').textContent = '';
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'current-password', required: true });
  const problem = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', { class: 'panel stack signin', onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    const answer = await call('GET', '/v1/environments', { signingIn: true });
    if (answer.status === 200) {
      route();
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
      problem.textContent = answer.status === 401 ? 'That token is not an admin token of this server.' : errorText(answer);
      input.focus();
    }
  } },
  h('h1', {}, 'Sign in'),
  h('label', { class: 'field', for: 'token' }, 'Admin token (FLAG_ADMIN_TOKEN, or one of FLAG_ADMIN_TOKENS)', input),
  h('p', { class: 'muted' }, 'The token stays in this tab (sessionStorage) and is sent only to this server.'),
  problem,
  h('button', { class: 'primary', type: 'submit' }, 'Sign in'));
  show(form);
  input.focus();
}

// ----- environments ----------------------------------------------------------------------------

async function environments() {
  crumbs({ text: 'Environments' });
  const answer = await call('GET', '/v1/environments');
  if (answer.status !== 200) return show(h('p', { class: 'error' }, errorText(answer)));
  const name = h('input', { type: 'text', id: 'new-env', placeholder: 'staging', pattern: '^[a-z0-9][a-z0-9_-]{0,63}$' });
  show(
    h('h1', {}, 'Environments'),
    answer.body.environments.length === 0
      ? h('p', { class: 'muted' }, 'No environment yet: one exists once it has a flag or a segment.')
      : h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Environment'), h('th', {}, 'Revision'), h('th', {}, 'Flags'))),
        h('tbody', {}, answer.body.environments.map((environment) => h('tr', {},
          h('td', {}, h('a', { href: `#/e/${enc(environment.name)}` }, environment.name)),
          h('td', { class: 'mono' }, environment.revision),
          h('td', {}, environment.flagCount))))),
    h('form', { class: 'row', onsubmit: (event) => {
      event.preventDefault();
      if (name.value) location.hash = `#/e/${enc(name.value)}/new`;
    } },
    h('label', { for: 'new-env' }, 'Open another environment:'), name,
    h('button', { type: 'submit' }, 'Create a flag there')),
  );
}

// ----- flags of an environment -----------------------------------------------------------------

async function flagList(env) {
  crumbs({ text: 'Environments', href: '#/' }, { text: env });
  const [flags, segments] = await Promise.all([
    call('GET', `/v1/environments/${enc(env)}/flags`),
    call('GET', `/v1/environments/${enc(env)}/segments`),
  ]);
  if (flags.status !== 200) return show(h('p', { class: 'error' }, errorText(flags)));
  const search = h('input', { type: 'search', id: 'search', placeholder: 'Search by key or description', 'aria-label': 'Search flags' });
  const body = h('tbody');
  const render = () => {
    const needle = search.value.trim().toLowerCase();
    body.replaceChildren(...flags.body.flags
      .filter((flag) => !needle || flag.key.toLowerCase().includes(needle) || (flag.description || '').toLowerCase().includes(needle))
      .map((flag) => h('tr', { 'data-flag': flag.key },
        h('td', {}, toggle(env, flag)),
        h('td', {}, h('a', { href: `#/e/${enc(env)}/f/${enc(flag.key)}` }, flag.key)),
        h('td', {}, flag.description || ''),
        h('td', { class: 'mono' }, `v${flag.version}`),
        h('td', {}, flag.error ? h('span', { class: 'error' }, 'unreadable') : plural((flag.rules || []).length, 'rule')))));
  };
  search.addEventListener('input', render);
  render();
  show(
    h('h1', {}, `Flags of ${env}`, h('span', { class: 'muted' }, ` · revision ${flags.body.revision}`)),
    h('div', { class: 'row' }, search,
      h('a', { href: `#/e/${enc(env)}/new` }, 'New flag'),
      h('a', { href: `#/e/${enc(env)}/audit` }, 'Audit log'),
      h('a', { href: `#/e/${enc(env)}/export` }, 'Export'),
      h('a', { href: `#/e/${enc(env)}/import` }, 'Import'),
      h('a', { href: `#/e/${enc(env)}/copy` }, 'Copy from another environment')),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'On'), h('th', {}, 'Key'), h('th', {}, 'Description'), h('th', {}, 'Version'), h('th', {}, ''))), body),
    h('h2', {}, 'Segments'),
    h('div', { class: 'row' }, h('a', { href: `#/e/${enc(env)}/new-segment` }, 'New segment')),
    segments.status === 200 && segments.body.segments.length
      ? h('table', {}, h('tbody', {}, segments.body.segments.map((segment) => h('tr', {},
        h('td', {}, h('a', { href: `#/e/${enc(env)}/s/${enc(segment.key)}` }, segment.key)),
        h('td', {}, segment.description || ''),
        h('td', { class: 'mono' }, `v${segment.version}`)))))
      : h('p', { class: 'muted' }, 'No segments.'),
  );
}

/** The kill switch of one flag: a switch that writes `enabled` at the version shown. */
function toggle(env, flag) {
  const button = h('button', {
    type: 'button', role: 'switch', class: 'switch', 'aria-checked': String(Boolean(flag.enabled)),
    'aria-label': `${flag.key} enabled`, disabled: Boolean(flag.error),
  });
  button.addEventListener('click', async () => {
    button.disabled = true;
    const wanted = !flag.enabled;
    const definition = withoutServerFields(flag);
    definition.enabled = wanted;
    const answer = await call('PUT', `/v1/environments/${enc(env)}/flags/${enc(flag.key)}`, {
      body: definition, headers: { 'If-Match': `"${flag.version}"` },
    });
    button.disabled = false;
    if (answer.status === 200) {
      Object.assign(flag, answer.body);
      button.setAttribute('aria-checked', String(Boolean(flag.enabled)));
      notice(`${flag.key} is ${flag.enabled ? 'on' : 'off'} (version ${flag.version}).`);
    } else if (answer.status === 412) {
      notice(`${flag.key} was changed by someone else meanwhile; reload to see it.`, 'warn');
    } else {
      notice(`${flag.key}: ${errorText(answer)}`, 'bad');
    }
    button.focus();
  });
  return button;
}

function withoutServerFields(definition) {
  const copy = structuredClone(definition);
  for (const field of SERVER_FIELDS) delete copy[field];
  return copy;
}

// ----- the flag editor -------------------------------------------------------------------------

async function flagPage(env, key, tab = 'edit') {
  const creating = key === null;
  crumbs({ text: 'Environments', href: '#/' }, { text: env, href: `#/e/${enc(env)}` }, { text: creating ? 'new flag' : key });
  let stored = null;
  if (!creating) {
    const answer = await call('GET', `/v1/environments/${enc(env)}/flags/${enc(key)}`);
    if (answer.status !== 200) return show(h('p', { class: 'error' }, errorText(answer)));
    stored = answer.body;
  }
  const tabs = creating ? ['edit', 'json'] : ['edit', 'json', 'history', 'explain', 'copy'];
  const labels = { edit: 'Edit', json: 'JSON', history: 'History', explain: 'Explain', copy: 'Copy' };
  const state = {
    env, key, stored, creating,
    draft: stored ? withoutServerFields(stored) : { description: '', enabled: false },
  };
  const content = h('div');
  const tabBar = h('div', { class: 'tabs', role: 'tablist' }, tabs.map((name) => h('button', {
    type: 'button', role: 'tab', id: `tab-${name}`, 'aria-selected': String(name === tab),
    onclick: () => (creating ? select(name) : go(`#/e/${enc(env)}/f/${enc(key)}/${name}`)),
  }, labels[name])));
  const select = (name) => {
    for (const button of tabBar.children) button.setAttribute('aria-selected', String(button.id === `tab-${name}`));
    ({ edit: editTab, json: jsonTab, history: historyTab, explain: explainTab, copy: copyTab })[name](state, content);
  };
  show(h('h1', {}, creating ? `New flag in ${env}` : key,
    stored ? h('span', { class: 'muted' }, ` · version ${stored.version}`) : null), tabBar, content);
  select(tabs.includes(tab) ? tab : 'edit');
}

/** Saves the draft: create-only for a new flag, at the version read for an existing one. */
async function saveFlag(state, form) {
  clearFieldErrors(form);
  const key = state.creating ? state.draft.key : state.key;
  if (!key) return fieldError(form, 'key', 'A key is needed.');
  const body = state.creating ? state.draft : { ...state.draft };
  const headers = state.creating ? { 'If-None-Match': '*' } : { 'If-Match': `"${state.stored.version}"` };
  const answer = await call('PUT', `/v1/environments/${enc(state.env)}/flags/${enc(key)}`, { body, headers });
  if (answer.status === 200 || answer.status === 201) {
    notice(`Saved ${key} (version ${answer.body.version}).`);
    go(`#/e/${enc(state.env)}/f/${enc(key)}`);
    return;
  }
  if (answer.status === 412) return conflict(form, state, key);
  const error = answer.body && answer.body.error;
  if (error && error.field) return fieldError(form, error.field, error.message);
  if (error && error.code === 'validation_failed') return fieldError(form, guessField(error.message), error.message);
  fieldError(form, '$', errorText(answer));
}

/** A save that lost a race: say so, and offer to load what is stored now. */
async function conflict(form, state, key) {
  const now = await call('GET', `/v1/environments/${enc(state.env)}/flags/${enc(key)}`);
  const version = now.status === 200 ? now.body.version : null;
  const reload = h('button', { type: 'button', class: 'primary', id: 'reload', onclick: () => { notice(''); route(); } }, 'Reload the flag');
  const banner = h('div', { class: 'banner warn', role: 'alert', id: 'conflict' },
    state.creating
      ? `A flag named ${key} was created meanwhile. `
      : `Someone else saved ${key} while you were editing (it is now at version ${version ?? '?'}; you started from version ${state.stored.version}). Your edit was not saved. `,
    reload);
  form.prepend(banner);
  reload.focus();
}

/** The field a message names, when the server gave no `field`: its leading path. */
function guessField(message) {
  const match = /^([A-Za-z$][\w.[\]]*):/.exec(message);
  return match ? match[1] : '$';
}

function clearFieldErrors(form) {
  for (const node of form.querySelectorAll('.field-error, #conflict')) node.remove();
  for (const node of form.querySelectorAll('.invalid')) {
    node.classList.remove('invalid');
    node.removeAttribute('aria-invalid');
  }
}

/** Shows `message` next to the control of `field` (or of the nearest enclosing path). */
function fieldError(form, field, message) {
  let path = field;
  let target = null;
  while (path && !(target = form.querySelector(`[data-field="${CSS.escape(path)}"]`))) {
    const shorter = path.replace(/(\.[^.[\]]+|\[\d+\])$/, '');
    if (shorter === path) break;
    path = shorter;
  }
  const text = h('p', { class: 'field-error', role: 'alert', id: `error-${Math.random().toString(36).slice(2)}` }, message);
  if (target) {
    target.classList.add('invalid');
    target.setAttribute('aria-invalid', 'true');
    target.setAttribute('aria-describedby', text.id);
    target.after(text);
    target.focus();
  } else {
    form.prepend(text);
  }
}

function textField(label, field, value, onchange, attributes = {}) {
  const id = `f-${field.replace(/[^\w]/g, '-')}`;
  return h('label', { class: 'field', for: id }, label,
    h('input', { type: 'text', id, 'data-field': field, value: value ?? '', oninput: (event) => onchange(event.target.value), ...attributes }));
}

function variantSelect(label, field, names, value, onchange) {
  const id = `f-${field}`;
  return h('label', { class: 'field', for: id }, label,
    h('select', { id, 'data-field': field, onchange: (event) => onchange(event.target.value) },
      names.map((name) => h('option', { value: name, selected: name === value }, name))));
}

/** A JSON value typed by a person: JSON when it parses, else the text as a string. */
function parseValue(text) {
  try { return JSON.parse(text); } catch { return text; }
}

function showValue(value) {
  return value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
}

function editTab(state, content) {
  const draft = state.draft;
  const form = h('form', { class: 'stack', id: 'flag-form', novalidate: true, onsubmit: (event) => { event.preventDefault(); saveFlag(state, form); } });
  const redraw = () => editTab(state, content);
  const variants = () => Object.keys(draft.variants ?? { on: true, off: false });
  form.append(...present([
    state.creating ? textField('Key', 'key', draft.key, (value) => { draft.key = value; }, { required: true, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$', autofocus: true }) : null,
    textField('Description', 'description', draft.description, (value) => { draft.description = value; }),
    h('div', { class: 'row' },
      h('label', { for: 'f-enabled' }, 'Enabled'),
      (() => {
        const box = h('button', { type: 'button', role: 'switch', class: 'switch', id: 'f-enabled', 'data-field': 'enabled', 'aria-checked': String(Boolean(draft.enabled)) });
        box.addEventListener('click', () => { draft.enabled = !draft.enabled; box.setAttribute('aria-checked', String(draft.enabled)); });
        return box;
      })()),
    variantsEditor(draft, redraw),
    h('div', { class: 'row' },
      variantSelect('Default variant', 'defaultVariant', variants(), draft.defaultVariant ?? 'on', (value) => { draft.defaultVariant = value; }),
      variantSelect('Off variant', 'offVariant', variants(), draft.offVariant ?? 'off', (value) => { draft.offVariant = value; }),
      textField('Bucket by (attribute; default targetingKey)', 'bucketBy', draft.bucketBy, (value) => { draft.bucketBy = value || undefined; })),
    prerequisitesEditor(draft, redraw),
    rulesEditor(draft, variants, redraw),
    h('div', { class: 'panel', 'data-field': 'rollout', tabindex: '-1' },
      h('h3', {}, 'Rollout when no rule matches'),
      rolloutEditor(draft.rollout ?? [], 'rollout', variants, (rollout) => { draft.rollout = rollout.length ? rollout : undefined; redraw(); })),
    metadataEditor(draft, redraw),
    h('div', { class: 'row' },
      h('button', { type: 'submit', class: 'primary', id: 'save' }, state.creating ? 'Create flag' : 'Save'),
      state.creating ? null : h('button', { type: 'button', class: 'danger', id: 'delete', onclick: () => deleteFlag(state) }, 'Delete flag')),
  ]));
  content.replaceChildren(form);
}

function variantsEditor(draft, redraw) {
  draft.variants = draft.variants ?? { on: true, off: false };
  const entries = Object.entries(draft.variants);
  const rebuild = (list) => { draft.variants = Object.fromEntries(list); };
  return h('fieldset', { class: 'panel', 'data-field': 'variants', tabindex: '-1' },
    h('legend', {}, 'Variants (name, then its value as JSON)'),
    entries.map(([name, value], index) => h('div', { class: 'row' },
      h('input', { type: 'text', 'aria-label': `variant ${index + 1} name`, 'data-field': `variants.${name}`, value: name,
        onchange: (event) => { entries[index][0] = event.target.value; rebuild(entries); redraw(); } }),
      h('input', { type: 'text', class: 'mono', 'aria-label': `variant ${index + 1} value`, value: showValue(value),
        onchange: (event) => { entries[index][1] = parseValue(event.target.value); rebuild(entries); } }),
      h('button', { type: 'button', 'aria-label': `remove variant ${name}`, onclick: () => { entries.splice(index, 1); rebuild(entries); redraw(); } }, 'Remove'))),
    h('button', { type: 'button', onclick: () => { entries.push([`variant-${entries.length + 1}`, '']); rebuild(entries); redraw(); } }, 'Add variant'));
}

function prerequisitesEditor(draft, redraw) {
  const list = draft.prerequisites ?? [];
  const set = () => { draft.prerequisites = list.length ? list : undefined; };
  return h('fieldset', { class: 'panel', 'data-field': 'prerequisites', tabindex: '-1' },
    h('legend', {}, 'Prerequisites (flags that must serve one of the variants first)'),
    list.map((prerequisite, index) => h('div', { class: 'row' },
      h('input', { type: 'text', 'aria-label': `prerequisite ${index + 1} flag`, 'data-field': `prerequisites[${index}].flag`, value: prerequisite.flag ?? '', placeholder: 'flag key',
        oninput: (event) => { prerequisite.flag = event.target.value; } }),
      h('input', { type: 'text', 'aria-label': `prerequisite ${index + 1} variants`, 'data-field': `prerequisites[${index}].variants`, value: (prerequisite.variants ?? []).join(', '), placeholder: 'on, blue',
        oninput: (event) => { prerequisite.variants = event.target.value.split(',').map((v) => v.trim()).filter(Boolean); } }),
      h('button', { type: 'button', onclick: () => { list.splice(index, 1); set(); redraw(); } }, 'Remove'))),
    h('button', { type: 'button', onclick: () => { list.push({ flag: '', variants: ['on'] }); set(); redraw(); } }, 'Add prerequisite'));
}

function rulesEditor(draft, variants, redraw) {
  const rules = draft.rules ?? [];
  const set = () => { draft.rules = rules.length ? rules : undefined; };
  return h('fieldset', { class: 'panel', 'data-field': 'rules', tabindex: '-1' },
    h('legend', {}, 'Rules (the first whose conditions all match decides)'),
    rules.map((rule, index) => {
      const path = `rules[${index}]`;
      const serves = rule.rollout ? 'rollout' : 'variant';
      return h('div', { class: 'panel inner', 'data-rule': index, 'data-field': path, tabindex: '-1' },
        h('h3', {}, `Rule ${index + 1}`),
        conditionsEditor(rule.conditions ?? (rule.conditions = []), `${path}.conditions`, redraw),
        h('div', { class: 'row' },
          h('label', { for: `${path}-serves` }, 'Serves'),
          h('select', { id: `${path}-serves`, onchange: (event) => {
            if (event.target.value === 'rollout') { delete rule.variant; rule.rollout = [{ variant: variants()[0], weight: 50 }, { variant: variants()[1] ?? variants()[0], weight: 50 }]; }
            else { delete rule.rollout; delete rule.bucketBy; rule.variant = variants()[0]; }
            redraw();
          } }, h('option', { value: 'variant', selected: serves === 'variant' }, 'a variant'), h('option', { value: 'rollout', selected: serves === 'rollout' }, 'a rollout')),
          serves === 'variant'
            ? variantSelect('Variant', `${path}.variant`, variants(), rule.variant, (value) => { rule.variant = value; })
            : textField('Bucket by', `${path}.bucketBy`, rule.bucketBy, (value) => { rule.bucketBy = value || undefined; })),
        serves === 'rollout' ? rolloutEditor(rule.rollout, `${path}.rollout`, variants, (rollout) => { rule.rollout = rollout; redraw(); }) : null,
        h('div', { class: 'row' },
          index > 0 ? h('button', { type: 'button', onclick: () => { rules.splice(index - 1, 0, rules.splice(index, 1)[0]); redraw(); } }, 'Move up') : null,
          h('button', { type: 'button', class: 'danger', onclick: () => { rules.splice(index, 1); set(); redraw(); } }, 'Remove rule')));
    }),
    h('button', { type: 'button', id: 'add-rule', onclick: () => { rules.push({ conditions: [], variant: variants()[0] }); set(); redraw(); } }, 'Add rule'));
}

function conditionsEditor(conditions, path, redraw) {
  return h('div', {},
    conditions.length === 0 ? h('p', { class: 'muted' }, 'No conditions: the rule matches everyone.') : null,
    conditions.map((condition, index) => {
      const here = `${path}[${index}]`;
      const segment = condition.operator === 'in_segment' || condition.operator === 'not_in_segment';
      return h('div', { class: 'row', 'data-condition': here },
        segment ? h('span', { class: 'muted' }, 'context') : h('input', {
          type: 'text', 'aria-label': `${here} attribute`, 'data-field': `${here}.attribute`, value: condition.attribute ?? '', placeholder: 'attribute',
          oninput: (event) => { condition.attribute = event.target.value; },
        }),
        h('select', { 'aria-label': `${here} operator`, 'data-field': `${here}.operator`, onchange: (event) => {
          condition.operator = event.target.value;
          if (event.target.value.endsWith('in_segment')) delete condition.attribute;
          if (event.target.value === 'exists') delete condition.value;
          redraw();
        } }, OPERATORS.map((operator) => h('option', { value: operator, selected: operator === condition.operator }, operator))),
        condition.operator === 'exists' ? null : h('input', {
          type: 'text', class: 'mono', 'aria-label': `${here} value`, 'data-field': `${here}.value`, value: showValue(condition.value),
          placeholder: segment ? 'segment key' : 'value (JSON, or text)',
          oninput: (event) => { condition.value = segment ? event.target.value : parseValue(event.target.value); },
        }),
        h('button', { type: 'button', 'aria-label': `remove ${here}`, onclick: () => { conditions.splice(index, 1); redraw(); } }, 'Remove'));
    }),
    h('button', { type: 'button', onclick: () => { conditions.push({ attribute: '', operator: 'equals', value: '' }); redraw(); } }, 'Add condition'));
}

function rolloutEditor(rollout, path, variants, onchange) {
  const list = rollout.map((entry) => ({ ...entry }));
  const total = list.reduce((sum, entry) => sum + (Number(entry.weight) || 0), 0);
  return h('div', { 'data-field': path, tabindex: '-1' },
    list.map((entry, index) => h('div', { class: 'row' },
      h('select', { 'aria-label': `${path}[${index}] variant`, 'data-field': `${path}[${index}].variant`, onchange: (event) => { list[index].variant = event.target.value; onchange(list); } },
        variants().map((name) => h('option', { value: name, selected: name === entry.variant }, name))),
      h('input', { type: 'number', min: '0', 'aria-label': `${path}[${index}] weight`, 'data-field': `${path}[${index}].weight`, value: entry.weight,
        onchange: (event) => { list[index].weight = Number(event.target.value); onchange(list); } }),
      h('span', { class: 'muted' }, total ? `${((Number(entry.weight) || 0) * 100 / total).toFixed(1)} %` : ''),
      h('button', { type: 'button', onclick: () => { list.splice(index, 1); onchange(list); } }, 'Remove'))),
    h('button', { type: 'button', onclick: () => { list.push({ variant: variants()[0], weight: 1 }); onchange(list); } }, 'Add slot'));
}

function metadataEditor(draft, redraw) {
  const entries = Object.entries(draft.metadata ?? {});
  const set = () => { draft.metadata = entries.length ? Object.fromEntries(entries) : undefined; };
  return h('fieldset', { class: 'panel', 'data-field': 'metadata', tabindex: '-1' },
    h('legend', {}, 'Metadata (strings, returned with every evaluation)'),
    entries.map(([name, value], index) => h('div', { class: 'row' },
      h('input', { type: 'text', 'aria-label': `metadata ${index + 1} name`, value: name, onchange: (event) => { entries[index][0] = event.target.value; set(); } }),
      h('input', { type: 'text', 'aria-label': `metadata ${index + 1} value`, value, oninput: (event) => { entries[index][1] = event.target.value; set(); } }),
      h('button', { type: 'button', onclick: () => { entries.splice(index, 1); set(); redraw(); } }, 'Remove'))),
    h('button', { type: 'button', onclick: () => { entries.push(['', '']); set(); redraw(); } }, 'Add metadata'));
}

function jsonTab(state, content) {
  const area = h('textarea', { id: 'json', rows: '24', 'data-field': '$', 'aria-label': 'The flag as JSON', spellcheck: 'false' }, pretty(state.draft));
  const form = h('form', { class: 'stack', onsubmit: (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    try {
      state.draft = JSON.parse(area.value);
    } catch (error) {
      return fieldError(form, '$', `Not JSON: ${error.message}`);
    }
    saveFlag(state, form);
  } },
  h('p', { class: 'muted' }, 'The whole definition as the API takes it; the server checks it on save.'),
  area,
  h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Save JSON')));
  content.replaceChildren(form);
}

async function deleteFlag(state) {
  if (!window.confirm(`Delete the flag ${state.key} from ${state.env}? Applications will get FLAG_NOT_FOUND.`)) return;
  const answer = await call('DELETE', `/v1/environments/${enc(state.env)}/flags/${enc(state.key)}`, { headers: { 'If-Match': `"${state.stored.version}"` } });
  if (answer.status === 204) {
    notice(`Deleted ${state.key}.`);
    location.hash = `#/e/${enc(state.env)}`;
  } else {
    notice(`${state.key}: ${errorText(answer)}`, answer.status === 412 ? 'warn' : 'bad');
  }
}

// ----- audit -----------------------------------------------------------------------------------

/** The lines a definition shows in a diff: pretty JSON without the fields every write changes
 * (`version`, `updatedAt`: the entry's header says them). */
function diffLines(definition) {
  if (!definition) return [];
  const { version, updatedAt, ...rest } = definition;
  return pretty(rest).split('\n');
}

/** A line diff of two definitions: removed lines, then added ones, with two lines of context;
 * longer unchanged runs are folded. */
function diff(before, after) {
  const a = diffLines(before);
  const b = diffLines(after);
  // Longest common subsequence; definitions are a few hundred lines at most.
  const cols = b.length + 1;
  const table = new Array((a.length + 1) * cols).fill(0);
  for (let i = a.length - 1; i >= 0; i -= 1) {
    for (let j = b.length - 1; j >= 0; j -= 1) {
      table[i * cols + j] = a[i] === b[j] ? table[(i + 1) * cols + j + 1] + 1 : Math.max(table[(i + 1) * cols + j], table[i * cols + j + 1]);
    }
  }
  const lines = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { lines.push(['same', a[i]]); i += 1; j += 1; }
    else if (i < a.length && (j === b.length || table[(i + 1) * cols + j] >= table[i * cols + j + 1])) { lines.push(['del', a[i]]); i += 1; }
    else { lines.push(['add', b[j]]); j += 1; }
  }
  const near = lines.map((_, index) => lines.slice(Math.max(0, index - 2), index + 3).some(([kind]) => kind !== 'same'));
  const out = [];
  for (let index = 0; index < lines.length; index += 1) {
    const [kind, text] = lines[index];
    if (kind !== 'same' || near[index] || lines.length <= 12) {
      out.push(h('span', { class: kind }, `${kind === 'add' ? '+' : kind === 'del' ? '-' : ' '} ${text}`));
      continue;
    }
    let end = index;
    while (end < lines.length && lines[end][0] === 'same' && !near[end]) end += 1;
    out.push(h('span', { class: 'same fold' }, `  … ${end - index} unchanged line${end - index === 1 ? '' : 's'}`));
    index = end - 1;
  }
  return h('div', { class: 'diff', role: 'group', 'aria-label': 'Changes' }, out);
}

/** The audit log of `env` (of one key when given), a page at a time. */
function auditView(env, key, kind) {
  const body = h('div', { class: 'stack', id: 'audit' });
  const more = h('button', { type: 'button', hidden: true }, 'Older entries');
  let before = null;
  const load = async () => {
    const query = new URLSearchParams({ limit: '20' });
    if (key) query.set('key', key);
    if (before) query.set('before', before);
    const answer = await call('GET', `/v1/environments/${enc(env)}/audit?${query}`);
    if (answer.status !== 200) return body.append(h('p', { class: 'error' }, errorText(answer)));
    const entries = answer.body.entries.filter((entry) => !kind || entry.kind === kind);
    if (!before && entries.length === 0) body.append(h('p', { class: 'muted' }, 'No writes yet.'));
    for (const entry of entries) {
      body.append(h('div', { class: 'panel audit-entry', 'data-actor': entry.actor, 'data-action': entry.action },
        h('div', { class: 'row' },
          h('strong', {}, entry.actor), h('span', {}, `${entry.action}d`), h('span', { class: 'tag' }, entry.kind),
          key ? null : h('a', { href: entry.kind === 'flag' ? `#/e/${enc(env)}/f/${enc(entry.key)}` : `#/e/${enc(env)}/s/${enc(entry.key)}` }, entry.key),
          h('span', { class: 'muted' }, `v${entry.oldVersion ?? '–'} → v${entry.newVersion ?? '–'} · revision ${entry.revision} · `, h('time', { datetime: entry.at }, new Date(entry.at).toLocaleString()))),
        entry.before || entry.after ? diff(entry.before, entry.after) : h('p', { class: 'muted' }, 'Definitions were not kept for this entry.')));
    }
    before = answer.body.next;
    more.hidden = !before;
  };
  more.addEventListener('click', load);
  load();
  return h('div', {}, body, more);
}

function historyTab(state, content) {
  content.replaceChildren(auditView(state.env, state.key, 'flag'));
}

function auditPage(env) {
  crumbs({ text: 'Environments', href: '#/' }, { text: env, href: `#/e/${enc(env)}` }, { text: 'audit log' });
  show(h('h1', {}, `Audit log of ${env}`), auditView(env, null, null));
}

// ----- explainer -------------------------------------------------------------------------------

function explainTab(state, content) {
  const saved = sessionStorage.getItem('flagship.explainContext') ?? '{\n  "targetingKey": "user-1"\n}';
  const area = h('textarea', { id: 'context', rows: '6', 'aria-label': 'Evaluation context (JSON)', spellcheck: 'false' }, saved);
  const result = h('div', { id: 'explanation', 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', onsubmit: async (event) => {
    event.preventDefault();
    let context;
    try { context = JSON.parse(area.value); } catch (error) { return result.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Not JSON: ${error.message}`)); }
    sessionStorage.setItem('flagship.explainContext', area.value);
    const answer = await call('POST', `/v1/environments/${enc(state.env)}/flags/${enc(state.key)}/explain`, { body: { context } });
    if (answer.status !== 200) return result.replaceChildren(h('p', { class: 'error', role: 'alert' }, errorText(answer)));
    result.replaceChildren(explanation(answer.body));
  } },
  h('label', { for: 'context' }, 'Context (as an application sends it)'), area,
  h('button', { type: 'submit', class: 'primary', id: 'explain' }, 'Explain'), result);
  content.replaceChildren(form);
}

function explanation(answer) {
  const why = answer.explanation;
  const outcome = answer.errorCode
    ? h('p', { class: 'banner bad', id: 'answer' }, `Error ${answer.errorCode}: ${answer.errorDetails}`)
    : h('p', { class: 'banner ok', id: 'answer' }, `Serves `, h('strong', {}, answer.variant), ` (${showValue(answer.value)}), reason `, h('strong', {}, answer.reason));
  return h('div', { class: 'stack' }, outcome,
    why.enabled ? null : h('p', {}, 'The flag is disabled: it serves its off variant.'),
    why.prerequisites.length ? h('div', {}, h('h3', {}, 'Prerequisites'), why.prerequisites.map((step) => h('div', { class: 'row' },
      h('span', { class: `tag ${step.passed ? 'passed' : 'failed'}` }, step.passed ? 'passed' : 'failed'),
      h('code', {}, step.flag), step.errorCode ? `answered ${step.errorCode}` : `served ${step.variant} (${step.reason}); needs one of ${step.variants.join(', ')}`))) : null,
    why.rules.length ? h('div', {}, h('h3', {}, 'Rules'), why.rules.map((rule) => h('div', { class: 'panel', 'data-explained-rule': rule.index },
      h('div', { class: 'row' }, h('strong', {}, `Rule ${rule.index + 1}`),
        h('span', { class: `tag ${rule.evaluated ? (rule.matched ? 'match' : 'no_match') : ''}` }, rule.evaluated ? (rule.matched ? 'matched' : 'did not match') : 'not reached')),
      rule.conditions.map((step) => h('div', { class: 'row' },
        h('span', { class: `tag ${step.outcome}` }, step.outcome),
        h('code', {}, step.segment ? `${step.operator} ${step.segment.key}` : `${step.attribute} ${step.operator} ${showValue(step.value)}`),
        step.segment ? h('span', { class: 'muted' }, `decided by ${step.segment.decidedBy.replace('_', ' ')}${step.segment.rule != null ? ` ${step.segment.rule + 1}` : ''}`) : null))))) : null,
    why.split ? splitView(why.split) : null);
}

function splitView(split) {
  const bar = h('div', { class: 'bucket', 'aria-hidden': 'true' }, split.slots.map((slot, index) => {
    const part = h('span', { class: index === split.slot ? 'hit' : '' }, `${slot.variant} ${slot.from}–${slot.to}`);
    part.style.flexGrow = String(Math.max(slot.to - slot.from, 0.5));
    return part;
  }));
  return h('div', { id: 'split' }, h('h3', {}, split.rule === null ? 'The flag\'s rollout' : `The rollout of rule ${split.rule + 1}`),
    h('p', {}, `${split.bucketBy} "${split.value}" falls in bucket `, h('strong', { id: 'bucket' }, split.bucket.toFixed(2)),
      ` of 100, slot ${split.slot + 1}: `, h('strong', {}, split.slots[split.slot].variant), '.'),
    bar);
}

// ----- copy ------------------------------------------------------------------------------------

async function copyTab(state, content) {
  const list = await call('GET', '/v1/environments');
  const names = list.status === 200 ? list.body.environments.map((environment) => environment.name).filter((name) => name !== state.env) : [];
  const target = h('input', { type: 'text', id: 'copy-target', list: 'environments', 'data-field': 'target', pattern: '^[a-z0-9][a-z0-9_-]{0,63}$', required: true });
  const form = h('form', { class: 'stack', onsubmit: async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    const env = target.value.trim();
    const path = `/v1/environments/${enc(env)}/flags/${enc(state.key)}`;
    const existing = await call('GET', path);
    if (existing.status === 200 && !window.confirm(`${env} already has ${state.key} (version ${existing.body.version}). Replace it?`)) return;
    const headers = existing.status === 200 ? { 'If-Match': `"${existing.body.version}"` } : { 'If-None-Match': '*' };
    const answer = await call('PUT', path, { body: withoutServerFields(state.stored), headers });
    if (answer.status === 200 || answer.status === 201) {
      notice(`Copied ${state.key} to ${env} (version ${answer.body.version} there).`);
      location.hash = `#/e/${enc(env)}/f/${enc(state.key)}`;
    } else {
      fieldError(form, 'target', errorText(answer));
    }
  } },
  h('p', {}, `Copies ${state.key} as stored (version ${state.stored.version}) into another environment. Segments and prerequisite flags it names must exist there.`),
  h('label', { class: 'field', for: 'copy-target' }, 'Target environment', target),
  h('datalist', { id: 'environments' }, names.map((name) => h('option', { value: name }))),
  h('button', { type: 'submit', class: 'primary', id: 'copy' }, 'Copy'));
  content.replaceChildren(form);
}

// ----- flags as files: export, import, copy ---------------------------------------------------

async function exportPage(env) {
  crumbs({ text: 'Environments', href: '#/' }, { text: env, href: `#/e/${enc(env)}` }, { text: 'export' });
  const format = h('select', { id: 'export-format', 'aria-label': 'Format' }, h('option', { value: 'json' }, 'JSON'), h('option', { value: 'yaml' }, 'YAML'));
  const area = h('textarea', { id: 'export', rows: '24', readonly: true, 'aria-label': 'The environment as one document', spellcheck: 'false' });
  const download = h('a', { id: 'download', class: 'button' }, 'Download');
  const load = async () => {
    const yaml = format.value === 'yaml';
    const response = await fetch(`/v1/environments/${enc(env)}/export`, {
      headers: { Authorization: `Bearer ${token()}`, Accept: yaml ? 'application/yaml' : 'application/json' },
    }).catch(() => null);
    if (!response || response.status !== 200) return notice(`Export failed (${response ? response.status : 'the server cannot be reached'}).`, 'bad');
    const text = await response.text();
    area.value = text;
    URL.revokeObjectURL(download.href);
    download.href = URL.createObjectURL(new Blob([text], { type: yaml ? 'application/yaml' : 'application/json' }));
    download.setAttribute('download', `${env}.${yaml ? 'yaml' : 'json'}`);
  };
  format.addEventListener('change', load);
  show(h('h1', {}, `Export ${env}`),
    h('p', { class: 'muted' }, 'Every flag and segment as one document: keep it in Git, review changes as diffs, import it elsewhere.'),
    h('div', { class: 'row' }, h('label', { for: 'export-format' }, 'Format'), format, download),
    area);
  await load();
}

/** What an import or copy did or would do, as lists of keys. */
function changes(answer) {
  const list = (label, keys, kind) => keys.length
    ? h('div', { class: 'row', 'data-change': `${kind}-${label}` }, h('span', { class: `tag ${label === 'deleted' ? 'failed' : label === 'unchanged' ? '' : 'passed'}` }, label), keys.map((key) => h('code', {}, key)))
    : null;
  return h('div', { class: 'stack', id: 'changes' },
    h('h3', {}, 'Flags'),
    ['created', 'updated', 'deleted', 'unchanged'].map((label) => list(label, answer[label], 'flags')),
    h('h3', {}, 'Segments'),
    ['created', 'updated', 'deleted', 'unchanged'].map((label) => list(label, answer.segments[label], 'segments')));
}

function problemsList(answer) {
  const error = answer.body && answer.body.error;
  if (!error) return h('p', { class: 'error', role: 'alert' }, errorText(answer));
  return h('div', { class: 'banner bad', role: 'alert', id: 'problems' }, h('p', {}, error.message),
    error.problems ? h('ul', {}, error.problems.map((problem) => h('li', {}, h('code', {}, problem.path), `: ${problem.message}`))) : null);
}

/** A preview (dry run) of `send`, then the same for real at the revision previewed. */
function previewThenApply(result, send, what) {
  return async () => {
    result.replaceChildren(h('p', { class: 'muted' }, 'Checking…'));
    const preview = await send(true, null);
    if (preview.status !== 200) return result.replaceChildren(problemsList(preview));
    const revision = preview.body.revision;
    const apply = h('button', { type: 'button', class: 'primary', id: 'apply', onclick: async () => {
      apply.disabled = true;
      const done = await send(false, revision);
      if (done.status === 200) {
        result.replaceChildren(h('div', { class: 'banner ok', id: 'applied' }, done.body.applied ? `${what} was applied at revision ${done.body.revision}.` : 'Nothing to change.'), changes(done.body));
      } else if (done.status === 412) {
        result.replaceChildren(h('div', { class: 'banner warn', role: 'alert', id: 'conflict' }, 'The environment changed since the preview; nothing was written. Preview again.'));
      } else {
        result.replaceChildren(problemsList(done));
      }
    } }, `Apply (${what.toLowerCase()} at revision ${revision})`);
    result.replaceChildren(h('p', {}, `Preview: what ${what.toLowerCase()} would change (nothing is written yet).`), changes(preview.body),
      preview.body.created.length + preview.body.updated.length + preview.body.deleted.length
        + preview.body.segments.created.length + preview.body.segments.updated.length + preview.body.segments.deleted.length
        ? apply : h('p', { class: 'muted' }, 'Nothing would change.'));
  };
}

function importPage(env) {
  crumbs({ text: 'Environments', href: '#/' }, { text: env, href: `#/e/${enc(env)}` }, { text: 'import' });
  const area = h('textarea', { id: 'import', rows: '16', 'aria-label': 'A document to import (JSON or YAML)', spellcheck: 'false', placeholder: '{"flags": [...], "segments": [...]}' });
  const file = h('input', { type: 'file', id: 'import-file', accept: '.json,.yaml,.yml', 'aria-label': 'Or choose a file' });
  file.addEventListener('change', async () => { if (file.files[0]) area.value = await file.files[0].text(); });
  const mode = h('select', { id: 'import-mode', 'aria-label': 'Mode' },
    h('option', { value: 'merge' }, 'merge: add and replace what the document holds'),
    h('option', { value: 'replace' }, 'replace: also delete what it does not hold'));
  const result = h('div', { id: 'import-result', 'aria-live': 'polite' });
  const send = (dryRun, revision) => {
    const yaml = !area.value.trim().startsWith('{');
    const headers = { 'Content-Type': yaml ? 'application/yaml' : 'application/json' };
    if (revision !== null) headers['If-Match'] = `"${revision}"`;
    return call('PUT', `/v1/environments/${enc(env)}/import?mode=${mode.value}&dryRun=${dryRun}`, { body: area.value, headers });
  };
  show(h('h1', {}, `Import into ${env}`),
    h('p', { class: 'muted' }, 'An exported document (JSON or YAML). You see what it would change before anything is written; applying it is one transaction.'),
    file, area, h('div', { class: 'row' }, mode, h('button', { type: 'button', class: 'primary', id: 'preview', onclick: previewThenApply(result, send, 'The import') }, 'Preview')),
    result);
}

async function copyPage(env) {
  crumbs({ text: 'Environments', href: '#/' }, { text: env, href: `#/e/${enc(env)}` }, { text: 'copy' });
  const list = await call('GET', '/v1/environments');
  const names = list.status === 200 ? list.body.environments.map((environment) => environment.name).filter((name) => name !== env) : [];
  const from = h('select', { id: 'copy-from', 'aria-label': 'From' }, names.map((name) => h('option', { value: name }, name)));
  const keys = h('input', { type: 'text', id: 'copy-keys', 'aria-label': 'Flags (comma-separated; all when empty)', placeholder: 'all flags' });
  const result = h('div', { id: 'copy-result', 'aria-live': 'polite' });
  const send = (dryRun) => {
    const chosen = keys.value.split(',').map((key) => key.trim()).filter(Boolean);
    const body = chosen.length ? { from: from.value, keys: chosen } : { from: from.value };
    return call('POST', `/v1/environments/${enc(env)}/copy?dryRun=${dryRun}`, { body });
  };
  show(h('h1', {}, `Copy flags into ${env}`),
    h('p', { class: 'muted' }, 'Flags of another environment, with the segments they use; a preview first.'),
    h('div', { class: 'row' }, h('label', { for: 'copy-from' }, 'From'), from, h('label', { for: 'copy-keys' }, 'Flags'), keys,
      h('button', { type: 'button', class: 'primary', id: 'preview', onclick: previewThenApply(result, send, 'The copy') }, 'Preview')),
    result);
}

// ----- segments --------------------------------------------------------------------------------

async function segmentPage(env, key) {
  const creating = key === null;
  crumbs({ text: 'Environments', href: '#/' }, { text: env, href: `#/e/${enc(env)}` }, { text: creating ? 'new segment' : `segment ${key}` });
  let stored = null;
  if (!creating) {
    const answer = await call('GET', `/v1/environments/${enc(env)}/segments/${enc(key)}`);
    if (answer.status !== 200) return show(h('p', { class: 'error' }, errorText(answer)));
    stored = answer.body;
  }
  const draft = stored ? withoutServerFields(stored) : { description: '', included: [], excluded: [], rules: [] };
  const content = h('div');
  const render = () => {
    const lines = (list) => (list ?? []).join('\n');
    const keys = (text) => text.split(/[\n,]/).map((v) => v.trim()).filter(Boolean);
    const form = h('form', { class: 'stack', id: 'segment-form', onsubmit: async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      const name = creating ? draft.key : key;
      const headers = creating ? { 'If-None-Match': '*' } : { 'If-Match': `"${stored.version}"` };
      const answer = await call('PUT', `/v1/environments/${enc(env)}/segments/${enc(name ?? '')}`, { body: draft, headers });
      if (answer.status === 200 || answer.status === 201) {
        notice(`Saved segment ${name} (version ${answer.body.version}).`);
        go(`#/e/${enc(env)}/s/${enc(name)}`);
      } else if (answer.status === 412) {
        form.prepend(h('div', { class: 'banner warn', role: 'alert', id: 'conflict' }, 'Someone else saved this segment meanwhile; your edit was not saved. ',
          h('button', { type: 'button', class: 'primary', onclick: () => route() }, 'Reload the segment')));
      } else {
        const error = answer.body && answer.body.error;
        fieldError(form, (error && error.field) || guessField(error ? error.message : ''), errorText(answer));
      }
    } },
    creating ? textField('Key', 'key', draft.key, (value) => { draft.key = value; }, { required: true }) : null,
    textField('Description', 'description', draft.description, (value) => { draft.description = value; }),
    h('label', { class: 'field', for: 's-included' }, 'Included targeting keys (one per line)',
      h('textarea', { id: 's-included', rows: '3', 'data-field': 'included', oninput: (event) => { draft.included = keys(event.target.value); } }, lines(draft.included))),
    h('label', { class: 'field', for: 's-excluded' }, 'Excluded targeting keys (one per line)',
      h('textarea', { id: 's-excluded', rows: '3', 'data-field': 'excluded', oninput: (event) => { draft.excluded = keys(event.target.value); } }, lines(draft.excluded))),
    h('fieldset', { class: 'panel', 'data-field': 'rules', tabindex: '-1' }, h('legend', {}, 'Rules (a context is in the segment when all conditions of one rule match)'),
      (draft.rules ?? (draft.rules = [])).map((rule, index) => h('div', { class: 'panel inner', 'data-field': `rules[${index}]`, tabindex: '-1' },
        h('h3', {}, `Rule ${index + 1}`),
        conditionsEditor(rule.conditions ?? (rule.conditions = []), `rules[${index}].conditions`, render),
        h('button', { type: 'button', class: 'danger', onclick: () => { draft.rules.splice(index, 1); render(); } }, 'Remove rule'))),
      h('button', { type: 'button', onclick: () => { draft.rules.push({ conditions: [] }); render(); } }, 'Add rule')),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, creating ? 'Create segment' : 'Save'),
      creating ? null : h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!window.confirm(`Delete the segment ${key} from ${env}?`)) return;
        const answer = await call('DELETE', `/v1/environments/${enc(env)}/segments/${enc(key)}`, { headers: { 'If-Match': `"${stored.version}"` } });
        if (answer.status === 204) { notice(`Deleted segment ${key}.`); location.hash = `#/e/${enc(env)}`; }
        else notice(errorText(answer), 'bad');
      } }, 'Delete segment')),
    creating ? null : h('h2', {}, 'History'),
    creating ? null : auditView(env, key, 'segment'));
    content.replaceChildren(form);
  };
  show(h('h1', {}, creating ? `New segment in ${env}` : `Segment ${key}`, stored ? h('span', { class: 'muted' }, ` · version ${stored.version}`) : null), content);
  render();
}

// ----- routing ---------------------------------------------------------------------------------

/** Shows the view of `hash`, reloading it when it is the one shown already. */
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  // A notice outlives the navigation its action caused, not the next one.
  if (Date.now() - noticeShownAt > 1500) notice('');
  if (!token()) return signIn();
  document.getElementById('sign-out').hidden = false;
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  try {
    if (parts[0] === 'e' && parts[1]) {
      const env = parts[1];
      if (parts.length === 2) return await flagList(env);
      if (parts[2] === 'new') return await flagPage(env, null);
      if (parts[2] === 'new-segment') return await segmentPage(env, null);
      if (parts[2] === 'audit') return auditPage(env);
      if (parts[2] === 'export') return await exportPage(env);
      if (parts[2] === 'import') return importPage(env);
      if (parts[2] === 'copy') return await copyPage(env);
      if (parts[2] === 'f' && parts[3]) return await flagPage(env, parts[3], parts[4]);
      if (parts[2] === 's' && parts[3]) return await segmentPage(env, parts[3]);
    }
    return await environments();
  } finally {
    // Keyboard users start from the new view, unless it focused a control of its own.
    if (!main().contains(document.activeElement)) main().focus({ preventScroll: true });
  }
}

document.getElementById('sign-out').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  notice('');
  location.hash = '#/';
  route();
});
window.addEventListener('hashchange', () => route());
route();
