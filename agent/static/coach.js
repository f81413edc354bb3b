// The coach's screen. Live state comes from the agent (server-sent events on /api/events); the page only asks the
// agent (POST /api/...) and shows what it decided. No framework, no build step; data is put into the page with
// textContent only (never as HTML).
'use strict';

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const T = JSON.parse($('#i18n').textContent);
  const CSRF = $('meta[name="csrf-token"]').content;
  let S = JSON.parse($('#initial').textContent); // the agent's latest status
  let connected = true;
  let lostSince = null;
  // What the page itself remembers: where the coach is heading, what was picked, which summary was dismissed.
  const ui = { intent: null, pick: null, typed: '', course: null, keypad: false, busy: false, ownCheck: false,
    summaryDone: null, message: null };
  const SUMMARY_SHOW_S = 900; // a summary older than this is not shown again after a reload
  const FACE_RESULT_SHOW_S = 4; // a finished face check stays on screen this long

  function t(key, vars) {
    let s = Object.prototype.hasOwnProperty.call(T, key) ? T[key] : key;
    for (const [k, v] of Object.entries(vars || {})) s = s.split('{' + k + '}').join(String(v));
    return s;
  }
  function setText(name, value) { for (const el of $$('[data-f="' + name + '"]')) el.textContent = value; }
  function duration(sec) {
    sec = Math.max(0, Math.round(sec || 0));
    const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60);
    return h ? t('duration_hm', { h: h, m: m }) : t('duration_ms', { m: m, s: sec % 60 });
  }
  function beijing(iso, withDate) {
    const opts = { timeZone: 'Asia/Shanghai', hour: '2-digit', minute: '2-digit', hour12: false };
    if (withDate) Object.assign(opts, { month: '2-digit', day: '2-digit' });
    try { return new Date(iso).toLocaleString(T.html_lang, opts); } catch (e) { return iso; }
  }
  function metres(m) { return m >= 1000 ? (m / 1000).toFixed(2) + ' km' : Math.round(m) + ' m'; }
  function courseLabel(code) {
    if (!code) return '';
    const item = code.slice(4, 6);
    const name = Object.prototype.hasOwnProperty.call(T, 'item_' + item) ? T['item_' + item] : item;
    return t('part_n', { part: code.charAt(3) }) + ' · ' + name + ' (' + code + ')';
  }
  function nameOf(id) {
    const p = S.screen.people;
    const all = p.coaches.concat(p.students);
    const found = all.find((x) => x.id === id);
    return found ? found.name : id;
  }

  // --- which screen --------------------------------------------------------------------------------------------
  function screenFor() {
    const sc = S.screen;
    if (S.state === 'training') return 'training';
    if (S.state === 'coach') {
      const sum = sc.summary;
      if (sum && sum.session !== ui.summaryDone && sum.ended_ago_s < SUMMARY_SHOW_S) return 'summary';
      return ui.intent === 'student-signin' ? 'student-signin' : 'coach';
    }
    return ui.intent === 'coach-signin' ? 'coach-signin' : 'idle';
  }

  // --- rendering -----------------------------------------------------------------------------------------------
  function render() {
    const sc = S.screen;
    const screen = screenFor();
    document.body.dataset.screen = screen;
    for (const sec of $$('main > .screen')) sec.hidden = sec.id !== 's-' + screen;
    setText('clock', beijing(S.now));
    renderStatus(sc);
    renderAlerts(sc);
    if (screen === 'coach-signin') renderPeople('coaches', sc.people.coaches);
    if (screen === 'student-signin') { renderPeople('students', sc.people.students); renderCourses(sc); }
    setText('chosen', ui.pick ? nameOf(ui.pick) + ' ' + ui.pick : (ui.typed ? ui.typed : t('anyone')));
    setText('coach_name', sc.coach_name || S.coach || '');
    if (screen === 'training' && sc.session) renderTraining(sc.session);
    if (screen === 'summary' && sc.summary) renderSummary(sc.summary);
    renderFace(sc);
    $('#keypad').hidden = !ui.keypad;
    $('#message').hidden = !ui.message;
    if (ui.message) setText('message', ui.message);
    $('#busy').hidden = !(ui.busy && $('#face').hidden);
    previews();
  }

  function mark(el, level) { el.classList.remove('ok', 'warn', 'bad'); if (level) el.classList.add(level); }

  function renderStatus(sc) {
    const g = S.gps;
    const gpsOk = sc.alerts.indexOf('no_gps') < 0;
    const gpsText = gpsOk ? t('gps_ok', { sats: g.sats == null ? '?' : g.sats }) : t('gps_none');
    const camText = t('camera_' + (sc.camera === 'none' ? 'unavailable' : sc.camera));
    const net = sc.network;
    const netText = net.state === 'synced' ? t('net_synced') : t(net.state === 'offline' ? 'net_offline' : 'net_sending', { n: net.pending });
    const d = sc.disk;
    const diskText = d.free_bytes == null ? t('not_known') : d.low ? t('disk_low', { mb: Math.floor(d.free_bytes / 1048576) })
      : t('disk_ok', { gb: (d.free_bytes / 1073741824).toFixed(1) });
    setText('gps', gpsText); setText('camera', camText); setText('network', netText); setText('disk', diskText);
    setText('school', sc.school || '—');
    const levels = { gps: gpsOk ? 'ok' : 'bad', camera: sc.camera === 'ok' ? 'ok' : sc.camera === 'unknown' ? null : 'bad',
      network: net.state === 'synced' ? 'ok' : net.state === 'offline' ? 'warn' : null, disk: d.low ? 'warn' : 'ok' };
    for (const [k, level] of Object.entries(levels)) {
      for (const el of $$('[data-chip="' + k + '"], [data-tile="' + k + '"]')) mark(el, level);
    }
  }

  let alertsKey = '';
  function renderAlerts(sc) {
    const codes = sc.alerts.slice();
    if (!connected && lostSince && Date.now() - lostSince > 3000) codes.unshift('connection_lost');
    const key = codes.join(',') + T.html_lang;
    if (key === alertsKey) return;
    alertsKey = key;
    const box = $('#alerts');
    box.replaceChildren();
    const warnOnly = ['offline', 'disk_low', 'no_roster', 'records_rejected'];
    for (const code of codes) {
      const row = document.createElement('div');
      row.className = 'alert' + (warnOnly.indexOf(code) >= 0 ? ' warn' : '');
      row.dataset.alert = code;
      const b = document.createElement('b');
      const span = document.createElement('span');
      if (code === 'connection_lost') { b.textContent = t('connection_lost'); } else {
        b.textContent = t('alert_' + code + '_title');
        span.textContent = t('alert_' + code + '_do');
      }
      row.append(b, span);
      box.append(row);
    }
  }

  const listKeys = {};
  function fillList(box, key, build) {
    if (listKeys[box.dataset.people || 'courses'] === key) return;
    listKeys[box.dataset.people || 'courses'] = key;
    box.replaceChildren(...build());
  }
  function personButton(p) {
    const btn = document.createElement('button');
    btn.className = 'btn person' + (ui.pick === p.id ? ' chosen' : '');
    btn.dataset.act = 'pick';
    btn.dataset.id = p.id;
    const name = document.createElement('span');
    name.textContent = p.name;
    const id = document.createElement('small');
    id.textContent = p.id;
    btn.append(name, id);
    return btn;
  }
  function renderPeople(which, people) {
    const box = $('[data-people="' + which + '"]', $('#s-' + (which === 'coaches' ? 'coach' : 'student') + '-signin'));
    fillList(box, JSON.stringify(people) + '|' + ui.pick, () => people.map(personButton));
  }
  function coursesFor(sc) {
    const students = sc.people.students;
    const chosen = students.find((p) => p.id === ui.pick);
    const codes = chosen ? chosen.courses : Array.from(new Set([].concat(...students.map((p) => p.courses))));
    return codes.length ? codes : ['1212110000', '1212120000', '1212130000', '1213210000'];
  }
  function renderCourses(sc) {
    const codes = coursesFor(sc);
    if (!ui.course || codes.indexOf(ui.course) < 0) ui.course = codes[0];
    const box = $('[data-courses]');
    fillList(box, codes.join() + '|' + ui.course + T.html_lang, () => codes.map((code) => {
      const btn = document.createElement('button');
      btn.className = 'btn course' + (ui.course === code ? ' chosen' : '');
      btn.dataset.act = 'course';
      btn.dataset.code = code;
      const item = code.slice(4, 6);
      const name = document.createElement('span');
      name.textContent = t('part_n', { part: code.charAt(3) }) + ' · ' + t('item_' + item);
      const small = document.createElement('small');
      small.textContent = code;
      btn.append(name, small);
      return btn;
    }));
  }

  function reasonList(items) {
    const box = document.createElement('div');
    if (!items.length) { box.className = 'counting ok'; box.textContent = t('all_counting'); return box; }
    const head = document.createElement('span');
    head.textContent = t('not_counting') + '：';
    const ul = document.createElement('ul');
    for (const r of items.slice(0, 3)) {
      const li = document.createElement('li');
      li.dataset.reason = r.reason;
      li.textContent = t('reason_' + r.reason) + ' — ' + r.minutes + ' ' + t('minutes_unit') + '（' + beijing(r.last) + '）';
      ul.append(li);
    }
    box.append(head, ul);
    return box;
  }
  function putReasons(name, items) {
    for (const el of $$('[data-f="' + name + '"]')) {
      const key = JSON.stringify(items) + T.html_lang;
      if (el.dataset.key === key) continue;
      el.dataset.key = key;
      const made = reasonList(items);
      el.className = made.className || 'counting';
      el.replaceChildren(...made.childNodes);
    }
  }

  function renderTraining(s) {
    setText('student_name', s.student_name || s.student);
    setText('coach_name', s.coach_name || s.coach || '');
    setText('course_label', courseLabel(s.course));
    setText('today_counted', s.today.counted);
    setText('today_recorded', t('recorded', { n: s.today.recorded }));
    setText('part_label', t('counted_part', { part: s.part }));
    setText('part_counted', s.part_total.counted);
    setText('part_recorded', t('recorded', { n: s.part_total.recorded }));
    setText('elapsed', duration(s.elapsed_s));
    setText('session_counted', s.minutes.counted);
    setText('session_recorded', s.minutes.recorded);
    const mps = S.gps.speed_mps;
    setText('speed', mps == null ? '—' : Math.round(mps * 3.6));
    setText('distance', metres(s.distance_m));
    setText('next_check', t('next_check_within', { t: duration(s.next_check_within_s) }));
    setText('backlog', t('backlog_n', { n: S.screen.network.pending }));
    putReasons('counting', s.not_counting);
  }

  function renderSummary(s) {
    setText('sum_student', s.student_name || s.student);
    setText('sum_course', courseLabel(s.course));
    setText('sum_time', beijing(s.started, true) + ' – ' + beijing(s.ended));
    setText('sum_duration', duration(s.duration_s));
    setText('sum_recorded', s.minutes.recorded + ' ' + t('minutes_unit'));
    setText('sum_counted', s.minutes.counted + ' ' + t('minutes_unit'));
    setText('sum_distance', metres(s.distance_m));
    setText('sum_checks', t('summary_checks_n', { pass: s.checks.passed, fail: s.checks.failed }));
    putReasons('sum_reasons', s.not_counting);
  }

  function renderFace(sc) {
    const f = sc.face_check;
    const fresh = f && (f.running || (f.done_ago_s != null && f.done_ago_s < FACE_RESULT_SHOW_S));
    const show = !!fresh && (f.trigger === 'random' || ui.ownCheck || f.running);
    const box = $('#face');
    box.hidden = !show;
    box.dataset.trigger = f ? f.trigger : '';
    box.dataset.state = !f ? '' : f.running ? 'running' : f.result;
    if (!show) return;
    const titles = { random: 'recheck_title', coach_login: 'coach_signin', coach_logout: 'coach_signout',
      student_login: 'student_signin', student_logout: 'student_signout' };
    setText('face_title', t(titles[f.trigger] || 'recheck_title'));
    setText('face_prompt', f.challenge ? t('challenge_' + f.challenge)
      : t(f.trigger === 'random' ? 'recheck_hint' : 'face_look'));
    const state = $('[data-f="face_state"]');
    state.classList.remove('ok', 'bad');
    if (f.running) state.textContent = t('checking');
    else if (f.result === 'pass') { state.textContent = t('face_passed'); state.classList.add('ok'); }
    else { state.textContent = t('face_failed'); state.classList.add('bad'); }
  }

  // --- camera preview: one snapshot at a time, only while a preview is on screen --------------------------------
  let previewBusy = false;
  function activePreview() {
    for (const id of ['#face', '#s-coach-signin', '#s-student-signin']) {
      const root = $(id);
      if (!root.hidden) return $('img[data-preview]', root);
    }
    return null;
  }
  function previews() {
    const img = activePreview();
    if (!img || previewBusy) return;
    previewBusy = true;
    const done = (ok) => {
      img.parentElement.classList.toggle('off', !ok);
      setTimeout(() => { previewBusy = false; previews(); }, ok ? 250 : 2000);
    };
    img.onload = () => done(true);
    img.onerror = () => done(false);
    img.src = '/api/camera/preview.jpg?n=' + Date.now();
  }

  // --- asking the agent ----------------------------------------------------------------------------------------
  function errorText(body) {
    const reason = body && body.reason;
    if (reason && Object.prototype.hasOwnProperty.call(T, 'err_' + reason)) return T['err_' + reason];
    return t('err_unknown');
  }
  async function ask(path, body, faceCheck) {
    ui.busy = true; ui.ownCheck = !!faceCheck; render();
    try {
      const r = await fetch('/api/' + path, { method: 'POST', credentials: 'same-origin',
        headers: { 'content-type': 'application/json', 'x-csrf-token': CSRF }, body: JSON.stringify(body || {}) });
      let answer = {};
      try { answer = await r.json(); } catch (e) { answer = {}; }
      if (answer.status) S = answer.status;
      if (!r.ok) ui.message = errorText(answer);
      return r.ok;
    } catch (e) {
      ui.message = t('err_network');
      return false;
    } finally {
      ui.busy = false;
      setTimeout(() => { ui.ownCheck = false; render(); }, FACE_RESULT_SHOW_S * 1000);
      render();
    }
  }
  function chosenPerson() { return ui.pick || (ui.typed.length === 16 ? ui.typed : null); }

  const actions = {
    'coach-signin': () => { ui.intent = 'coach-signin'; ui.pick = null; ui.typed = ''; },
    'student-signin': () => { ui.intent = 'student-signin'; ui.pick = null; ui.typed = ''; ui.course = null; },
    back: () => { ui.intent = null; ui.pick = null; ui.typed = ''; },
    pick: (el) => { ui.pick = ui.pick === el.dataset.id ? null : el.dataset.id; ui.typed = ''; },
    course: (el) => { ui.course = el.dataset.code; },
    keypad: () => { ui.keypad = true; ui.pick = null; },
    'keypad-done': () => { ui.keypad = false; },
    'message-ok': () => { ui.message = null; },
    'summary-done': () => { ui.summaryDone = S.screen.summary && S.screen.summary.session; ui.intent = null; },
    'start-coach': async () => {
      if (await ask('coach/login', { person: chosenPerson() }, true)) { ui.intent = null; ui.pick = null; }
    },
    'start-student': async () => {
      if (await ask('student/login', { person: chosenPerson(), course: ui.course }, true)) {
        ui.intent = null; ui.pick = null;
      }
    },
    'student-signout': async () => { await ask('student/logout', {}, true); },
    'coach-signout': async () => {
      ui.summaryDone = S.screen.summary && S.screen.summary.session;
      await ask('coach/logout', {}, true);
    },
  };
  document.addEventListener('click', (ev) => {
    const key = ev.target.closest('[data-key]');
    if (key) {
      const k = key.dataset.key;
      ui.typed = k === 'clear' ? '' : k === 'del' ? ui.typed.slice(0, -1) : (ui.typed + k).slice(0, 16);
      $('.typed-input').value = ui.typed;
      render();
      return;
    }
    const el = ev.target.closest('[data-act]');
    if (!el || ui.busy) return;
    const result = actions[el.dataset.act] && actions[el.dataset.act](el);
    render();
    if (result && result.then) result.then(render);
  });
  $('.typed-input').addEventListener('input', (ev) => {
    ui.typed = ev.target.value.toUpperCase().replace(/[^0-9A-Z]/g, '').slice(0, 16);
    ev.target.value = ui.typed;
    render();
  });

  // --- live state ----------------------------------------------------------------------------------------------
  function connect() {
    const events = new EventSource('/api/events');
    events.addEventListener('status', (ev) => {
      S = JSON.parse(ev.data);
      connected = true; lostSince = null;
      render();
    });
    events.onerror = () => {
      if (connected) { connected = false; lostSince = Date.now(); }
      render();
    };
  }
  render();
  connect();
})();
