// jetflow dashboard: live refresh over Server-Sent Events, and the admin actions. The admin
// token is kept in sessionStorage (this tab only) and sent as a Bearer header; it is never
// put in a URL or a cookie.
(function () {
  'use strict';
  var KEY = 'jetflow-admin-token';
  var $ = function (sel) { return document.querySelector(sel); };
  var token = function () { return sessionStorage.getItem(KEY) || ''; };

  function showToken() {
    var st = $('#token-state');
    if (st) st.textContent = token() ? 'token set' : 'no token';
  }

  function flash(msg, ok) {
    var f = $('#flash');
    if (!f) return;
    f.textContent = msg;
    f.className = 'flash ' + (ok ? 'ok' : 'err');
  }

  var form = $('#token-form');
  if (form) {
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var input = $('#token');
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = '';
      showToken();
    });
    $('#token-clear').addEventListener('click', function () {
      sessionStorage.removeItem(KEY);
      showToken();
    });
  }

  var content = $('#content');
  var busy = false;
  function refresh() {
    if (!content || busy || document.hidden) return;
    // Never replace the page under a form someone is filling in (a signal's data).
    var typing = Array.prototype.some.call(content.querySelectorAll('textarea'), function (t) {
      return t === document.activeElement || t.value !== '';
    });
    if (typing) return;
    busy = true;
    var u = new URL(location.href);
    u.searchParams.set('partial', '1');
    fetch(u, { headers: { Accept: 'text/html' } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) content.innerHTML = html; })
      .catch(function () {})
      .then(function () { busy = false; });
  }

  document.addEventListener('click', function (e) {
    var b = e.target.closest('[data-post]');
    if (!b) return;
    e.preventDefault();
    if (!token()) { flash('Enter the admin token first (top right).', false); return; }
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    fetch(b.dataset.post, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { Authorization: 'Bearer ' + token(), 'Content-Type': 'application/json' },
      body: b.dataset.bodyFrom ? (document.querySelector(b.dataset.bodyFrom).value.trim() || 'null') : (b.dataset.body || '{}')
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (r.ok) {
          if (b.dataset.bodyFrom) {
            var field = document.querySelector(b.dataset.bodyFrom);
            field.value = '';
            field.blur(); // the page may update itself again
          }
          var msg = b.dataset.done || 'Done.';
          if (j.failed) msg += ' ' + j.failed + ' could not be replayed: ' + j.results.filter(function (x) { return x.error; }).map(function (x) { return x.error; }).join('; ');
          flash(msg, !j.failed);
        } else {
          flash((j.error || r.statusText) + ' (HTTP ' + r.status + ')', false);
        }
      });
    }).catch(function (err) {
      flash(String(err), false);
    }).then(function () {
      b.disabled = false;
      refresh();
    });
  });

  if (content && content.dataset.live === '1' && window.EventSource) {
    var live = $('#live');
    var es = new EventSource('/events');
    var first = true;
    es.addEventListener('overview', function () {
      if (first) { first = false; return; } // the page was just drawn
      refresh();
    });
    es.onopen = function () { if (live) live.classList.add('on'); };
    es.onerror = function () { if (live) live.classList.remove('on'); };
  }
  showToken();
})();
